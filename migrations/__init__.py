"""Alembic migrations of the zis-inventory schema (installed as inventory.migrations)."""
