"""klt shared library.

Sub-packages, from the bottom layer up (import-linter enforces the order):

- ``aiokits``: asyncio primitives with no domain knowledge (supervised tasks, backoff);
- ``structs``: pure data: the Kubernetes API models and the event catalogue;
- ``configs``: settings objects, passed down explicitly and never read from globals;
- ``observability``: tracing, metrics, health endpoints and JSON logs;
- ``clients``: the only code that imports aiokafka or kubernetes_asyncio;
- ``service``: the one template every klt service runs on.
"""
