"""PII policies and their secret: pure, below ingestion (see policies.py)."""
