"""`make bench`: decision latency, bulk decisions, paused runs at scale, per-step overhead."""
