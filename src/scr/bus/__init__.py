"""The bus: NATS JetStream between the instances of a cluster (scale-out).

Any instance validates an event and publishes it to its tenant's partition subject; the
``202`` goes out once JetStream has stored it (``scr.bus.jetstream``). The partition's owner
takes it from a durable pull consumer and appends it to the ledger through the committer,
acking only after the commit (``scr.bus.consumer``). Which instance owns which partition is
decided by ``scr.bus.ownership``; ``scr.bus.instance`` ties them together for one process.
"""
