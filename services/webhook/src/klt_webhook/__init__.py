"""klt webhook service."""
