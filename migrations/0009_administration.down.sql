DROP TABLE account_exports;
DROP TABLE audit_log;
ALTER TABLE users DROP COLUMN deleted_at;
ALTER TABLE users DROP COLUMN deactivated_at;
