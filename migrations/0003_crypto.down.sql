DROP TABLE sender_key_distributions;
DROP TABLE sender_keys;
DROP TABLE one_time_prekeys;
DROP TABLE signed_prekeys;
DROP TABLE device_keys;
