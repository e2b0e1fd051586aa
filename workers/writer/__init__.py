"""The writer process: the only one that writes to SQLite (group commit, acknowledged after commit)."""
