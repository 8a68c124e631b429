"""The dashboard: one page over the read API and a live stream of the tenant's numbers."""
