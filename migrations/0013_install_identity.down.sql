DROP TABLE install_identity;
