"""The dev stack's node agent, a kubelet stand-in.

Run it with ``python -m klt_cli.devstack.nodeagent``.
"""
