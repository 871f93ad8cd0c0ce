"""klt task-runner service."""
