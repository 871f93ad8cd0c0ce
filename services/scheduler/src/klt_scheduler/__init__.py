"""klt scheduler service."""
