"""klt app-aggregator service."""
