"""Redis adapters for the state shards keep in memory: cart checkpoints and sessions."""
