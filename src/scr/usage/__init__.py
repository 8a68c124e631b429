"""Usage: exact per-tenant aggregates of the ledger's events, and the queries over them.

``aggregate`` turns a group of ledger entries into per-minute rows keyed by (tenant, minute,
model, user_id, session_type, status, tier, provider); ``windows`` cuts local time into hours,
days, weeks and months of an IANA zone; ``query`` answers ``GET /v1/usage`` from the rows
(``routes``); ``reader`` follows the ledger from its durable cursor and writes each group's
rows with the cursor in one transaction (run as ``scr: usage`` by ``scr serve``).
``exports`` reads a provider's export (OpenAI costs and usage, Anthropic's cost report, FOCUS
CSV) into per-(day, model) charges, and ``reconcile`` compares them with the aggregates
(``POST /v1/usage/reconcile``, ``scr usage reconcile`` in ``cli``).
"""
