"""Operations on a whole install: backups (create, verify, restore, scheduled), the move from
SQLite and disk to Postgres and S3, and `sup doctor`.

The CLI calls these, and `sup run` the scheduled backup. They work on the backends directly
(`sup.db`, `sup.blobs`, the data directory), never through the transports.
"""
