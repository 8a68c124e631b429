"""Retention: archive tiers, purge and legal holds."""
