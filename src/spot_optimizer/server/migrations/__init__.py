"""Alembic migrations of the control plane database (packaged; run with `spot-optimizer db upgrade`)."""
