DROP TABLE install_identity;
-- The membership notices of channels stay deleted: what they said is gone.
