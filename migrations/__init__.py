"""The Alembic environment and revisions, installed as ``detector.migrations``."""
