"""Stores: where records are committed and queried (SQLite, PostgreSQL), and the spool."""
