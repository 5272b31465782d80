"""The server's storage: SQLAlchemy models, the engine, migrations. SQL lives here only."""
