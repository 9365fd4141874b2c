DROP TABLE blocked_users;
DROP TABLE contacts;
DROP TABLE invites;
DROP TABLE recovery_codes;
DROP TABLE sessions;
DROP TABLE user_devices;
DROP TABLE users;
