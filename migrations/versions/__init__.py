"""Alembic revisions of the relaywatch schema."""
