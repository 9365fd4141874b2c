"""The database: SQLite and Postgres backends (database.py), migrations, group commit, and the SQL of each domain."""
