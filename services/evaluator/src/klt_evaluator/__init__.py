"""klt evaluator service."""
