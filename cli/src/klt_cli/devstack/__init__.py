"""`klt dev`: a local Kafka + Kubernetes control plane built from package registries.

Entry points for code: `klt_cli.devstack.stack.ensure_up()` and `StackInfo`.
Importing this package starts nothing.
"""
