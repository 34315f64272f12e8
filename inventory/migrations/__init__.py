"""Alembic migrations of the zis-inventory schema."""
