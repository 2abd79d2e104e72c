"""Language-model clients: one protocol, one adapter per provider (see base.py)."""
