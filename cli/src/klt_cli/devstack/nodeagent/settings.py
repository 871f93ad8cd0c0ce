"""Settings of the dev stack's node agent."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class NodeAgentSettings(BaseSettings):
    """How many nodes the agent plays, and how it runs the pods bound to them."""

    model_config = SettingsConfigDict(
        env_prefix="KLT_NODEAGENT_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    kubeconfig: str
    """Kubeconfig of the dev stack's apiserver (the agent is a client like any kubelet)."""

    state_dir: str
    """Where pod sandboxes (working directories, mounted files, logs) live."""

    repo_root: str
    """The klt checkout; runtime entrypoints are copied from its runtimes/ directory."""

    sandbox_dir: str = "/tmp/klt-sandboxes"  # noqa: S108 - must be reachable by the pod user
    """Pod sandboxes, and the tools pod processes may run (deno, python3, the runtime
    entrypoints). Outside root's home on purpose: pod processes run as an unprivileged user,
    which cannot traverse /root."""

    nodes: int = 1
    """How many Ready nodes to register. More than one lets tests spread pods."""

    node_prefix: str = "klt-node"
    """Node names are ``<prefix>-<index>``."""

    kubelet_port: int = 10250
    """First node's log endpoint port (the apiserver proxies ``kubectl logs`` here); node i
    uses ``kubelet_port + i``."""

    heartbeat_seconds: float = 10.0
    """Lease renewal and node status period. The node controller marks a node NotReady after
    40 s without a heartbeat, so 10 s leaves room for a slow loop."""

    run_as_user: str = "nobody"
    """Unprivileged user for pod processes when the agent runs as root; empty keeps the
    agent's own user."""

    restart_backoff: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    """Seconds before restarting a failed container under restartPolicy OnFailure/Always.
    The real kubelet starts at 10 s; the dev stack is shorter so that Job retries finish in
    test time. The last value repeats."""

    process_images: tuple[str, ...] = ("busybox", "alpine", "python")
    """Images whose containers run their command and args as host processes. Matched against
    the image's repository name without registry, tag or digest."""

    deno_runtime_images: tuple[str, ...] = ("deno-runtime",)
    """Images run through runtimes/deno-runtime/entrypoint.sh on the host."""

    python_runtime_images: tuple[str, ...] = ("python-runtime",)
    """Images run through runtimes/python-runtime/entrypoint.sh on the host."""
