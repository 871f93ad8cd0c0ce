"""Asyncio primitives with no knowledge of Kubernetes, Kafka or Keptn."""
