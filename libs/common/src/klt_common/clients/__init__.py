"""The only modules that talk to Kafka (aiokafka) and Kubernetes (kubernetes_asyncio)."""
