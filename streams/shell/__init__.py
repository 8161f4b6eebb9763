"""The Faust shell around the pure core: the worker app and agents, its producer (outbox),
the consumer-commit patches, the process entry point. Beneath it: `tables`."""
