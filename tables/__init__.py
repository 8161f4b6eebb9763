"""Account state and dedup tables: Faust tables on RocksDB with changelogs."""
