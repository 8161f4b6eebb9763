"""What every process shares: settings, the Kafka connection and I/O, metrics,
progress, the embedded broker."""
