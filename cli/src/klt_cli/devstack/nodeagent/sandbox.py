"""Pod sandboxes on the host: files for volumes, environment, and how a container is run.

A real kubelet gives each container its own filesystem. Here processes share the host's, so
each pod gets a directory, and every volume mount (``/var/data``, ``/keptn`` …) becomes a
directory inside it. Paths in the container's env, command and args that point into a mount
are rewritten to the host path, which is enough for the function runtimes and for scripts that
read mounted files. The mapping is deliberately simple: this is a test rig, not an isolation
boundary, and processes run as an unprivileged user where the agent can arrange it.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from klt_cli.devstack.nodeagent.settings import NodeAgentSettings

Body = dict[str, Any]


class SandboxError(Exception):
    """The pod cannot be started as specified (missing ConfigMap key, unknown image …).

    Kubelet's equivalents are CreateContainerConfigError and friends: the pod stays Pending
    with a reason, rather than the agent crashing.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Launch:
    """How to start one container as a host process."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass
class Sandbox:
    """The host-side directory tree of one pod."""

    root: Path
    mounts: dict[str, Path] = field(default_factory=dict)

    def translate(self, value: str) -> str:
        """Rewrite a container path inside a mount to its host path (longest mount first)."""
        for mount_path in sorted(self.mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(self.mounts[mount_path]) + value[len(mount_path.rstrip("/")) :]
        return value

    def translate_embedded(self, value: str) -> str:
        """Rewrite mount paths that appear inside a longer string (shell snippets, CMD_ARGS)."""
        for mount_path in sorted(self.mounts, key=len, reverse=True):
            pattern = re.escape(mount_path.rstrip("/")) + r"(?=/|\b|$)"
            value = re.sub(pattern, str(self.mounts[mount_path]), value)
        return value


def image_name(image: str) -> str:
    """``docker.io/library/busybox:1.36@sha256:…`` → ``busybox``."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def classify(image: str, settings: NodeAgentSettings) -> str:
    """One of ``deno``, ``python-runtime``, ``process`` or ``simulated``."""
    name = image_name(image)
    if any(name == x or name.endswith(x) for x in settings.deno_runtime_images):
        return "deno"
    if any(name == x or name.endswith(x) for x in settings.python_runtime_images):
        return "python-runtime"
    if name in settings.process_images:
        return "process"
    return "simulated"


def build_sandbox(
    pod: Body,
    base: Path,
    configmaps: dict[str, Body],
    secrets: dict[str, Body],
) -> Sandbox:
    """Create the pod's directory with every volume's files written out."""
    uid = pod["metadata"]["uid"]
    root = base / uid
    if root.exists():
        shutil.rmtree(root)
    (root / "volumes").mkdir(parents=True)
    spec = pod.get("spec", {})
    volume_dirs: dict[str, Path] = {}
    for volume in spec.get("volumes") or []:
        vdir = root / "volumes" / volume["name"]
        vdir.mkdir(parents=True, exist_ok=True)
        volume_dirs[volume["name"]] = vdir
        if "configMap" in volume:
            src = volume["configMap"]
            _write_source(vdir, src, configmaps.get(src.get("name", "")), "ConfigMap", decode=False)
        elif "secret" in volume:
            src = volume["secret"]
            secret = secrets.get(src.get("secretName", ""))
            _write_source(vdir, {**src, "name": src.get("secretName", "")}, secret, "Secret", True)
    sandbox = Sandbox(root=root)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for mount in container.get("volumeMounts") or []:
            vdir = volume_dirs.get(mount["name"])
            if vdir is None:
                continue
            host = vdir / mount["subPath"] if mount.get("subPath") else vdir
            sandbox.mounts[mount["mountPath"]] = host
    return sandbox


def _write_source(vdir: Path, src: Body, obj: Body | None, kind: str, decode: bool) -> None:
    name = src.get("name", "")
    if obj is None:
        if src.get("optional"):
            return
        raise SandboxError("CreateContainerConfigError", f'{kind.lower()} "{name}" not found')
    data: dict[str, str] = dict(obj.get("data") or {})
    if not decode:
        binary = obj.get("binaryData") or {}
        data.update(binary)
    items = src.get("items")
    pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
    for key, path in pairs:
        if key not in data:
            raise SandboxError(
                "CreateContainerConfigError", f'couldn\'t find key {key} in {kind} "{name}"'
            )
        target = vdir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = data[key]
        target.write_bytes(base64.b64decode(raw) if decode else raw.encode())


def container_env(
    pod: Body, container: Body, configmaps: dict[str, Body], secrets: dict[str, Body]
) -> dict[str, str]:
    """Resolve env and envFrom the way the kubelet does (later entries win)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            cm = configmaps.get(ref["name"])
            if cm is None and not ref.get("optional"):
                raise SandboxError(
                    "CreateContainerConfigError", f'configmap "{ref["name"]}" not found'
                )
            for k, v in ((cm or {}).get("data") or {}).items():
                env[prefix + k] = v
        if "secretRef" in source:
            ref = source["secretRef"]
            secret = secrets.get(ref["name"])
            if secret is None and not ref.get("optional"):
                raise SandboxError(
                    "CreateContainerConfigError", f'secret "{ref["name"]}" not found'
                )
            for k, v in ((secret or {}).get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode()
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = _expand(str(item["value"]), env)
            continue
        value_from = item.get("valueFrom") or {}
        value = _value_from(pod, value_from, configmaps, secrets)
        if value is not None:
            env[name] = value
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    # Kubernetes expands $(VAR) references to earlier variables; $$ escapes.
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def _value_from(
    pod: Body, value_from: Body, configmaps: dict[str, Body], secrets: dict[str, Body]
) -> str | None:
    if "secretKeyRef" in value_from:
        ref = value_from["secretKeyRef"]
        secret = secrets.get(ref["name"])
        data = (secret or {}).get("data") or {}
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            what = "secret" if secret is None else f"key {ref['key']} in secret"
            raise SandboxError("CreateContainerConfigError", f'{what} "{ref["name"]}" not found')
        return base64.b64decode(data[ref["key"]]).decode()
    if "configMapKeyRef" in value_from:
        ref = value_from["configMapKeyRef"]
        cm = configmaps.get(ref["name"])
        data = (cm or {}).get("data") or {}
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise SandboxError(
                "CreateContainerConfigError",
                f"couldn't find key {ref['key']} in ConfigMap {ref['name']}",
            )
        return str(data[ref["key"]])
    if "fieldRef" in value_from:
        path = value_from["fieldRef"].get("fieldPath", "")
        meta = pod.get("metadata", {})
        simple = {
            "metadata.name": meta.get("name", ""),
            "metadata.namespace": meta.get("namespace", ""),
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
            "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1",
            "status.podIP": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        return ""
    return None


def launch_for(
    kind: str,
    container: Body,
    env: dict[str, str],
    sandbox: Sandbox,
    settings: NodeAgentSettings,
) -> Launch:
    """Turn a container spec into a host command line for its class of image."""
    env = {k: sandbox.translate(v) for k, v in env.items()}
    tools = Path(settings.sandbox_dir)
    base_env = {
        "PATH": f"{tools / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(sandbox.root),
        "HOSTNAME": "localhost",
        # Deno caches compiled modules under DENO_DIR; keep it inside the sandbox so an
        # unprivileged process can write it.
        "DENO_DIR": str(sandbox.root / ".deno"),
        "LANG": "C.UTF-8",
    }
    full_env = {**base_env, **env}
    workdir = container.get("workingDir")
    cwd = Path(sandbox.translate(workdir)) if workdir else sandbox.root / "work"
    if not workdir or not cwd.is_relative_to(sandbox.root):
        cwd = sandbox.root / "work"
    cwd.mkdir(parents=True, exist_ok=True)
    runtimes = tools / "runtimes"
    command = [sandbox.translate_embedded(c) for c in container.get("command") or []]
    args = [sandbox.translate_embedded(a) for a in container.get("args") or []]
    if kind == "deno":
        if "CMD_ARGS" in full_env:
            full_env["CMD_ARGS"] = sandbox.translate_embedded(full_env["CMD_ARGS"])
        return Launch([str(runtimes / "deno-runtime" / "entrypoint.sh"), *args], full_env, cwd)
    if kind == "python-runtime":
        if "CMD_ARGS" in full_env:
            full_env["CMD_ARGS"] = sandbox.translate_embedded(full_env["CMD_ARGS"])
        return Launch([str(runtimes / "python-runtime" / "entrypoint.sh"), *args], full_env, cwd)
    argv = command + args
    if not command:
        name = image_name(container.get("image", ""))
        # The images' default entrypoints: busybox and alpine start a shell, python an
        # interpreter; args then go to that program.
        default = ["python3"] if name == "python" else ["sh"]
        argv = default + args
    return Launch(argv, full_env, cwd)


def prepare_tools(settings: NodeAgentSettings) -> None:
    """Put deno, python3 and the runtime entrypoints where an unprivileged process can run them.

    The stack's own binaries live under the build cache (often in root's home). Hard links
    (or copies across file systems) make them reachable without widening any permissions.
    """
    tools = Path(settings.sandbox_dir)
    bindir = tools / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for path in (tools, bindir):
        path.chmod(0o755)
    for program in ("deno", "python3"):
        found = (
            "/usr/bin/python3"
            if program == "python3" and Path("/usr/bin/python3").exists()
            else shutil.which(program)
        )
        if not found:
            continue
        target = bindir / program
        if target.exists() or target.is_symlink():
            target.unlink()
        source = Path(found).resolve()
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        target.chmod(0o755)
    python_link = bindir / "python"
    if not python_link.exists() and (bindir / "python3").exists():
        python_link.symlink_to(bindir / "python3")
    runtimes = tools / "runtimes"
    if runtimes.exists():
        shutil.rmtree(runtimes)
    shutil.copytree(Path(settings.repo_root) / "runtimes", runtimes)
    for dirpath, dirnames, filenames in os.walk(runtimes):
        os.chmod(dirpath, 0o755)  # noqa: S103 - the pod user must read the runtimes
        for name in filenames:
            full = os.path.join(dirpath, name)
            os.chmod(full, 0o755 if name.endswith(".sh") else 0o644)
        del dirnames


def unprivileged_ids(user: str) -> tuple[int, int] | None:
    """The uid/gid to drop to, or None when not root or the user does not exist."""
    if not user or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def hand_over(root: Path, ids: tuple[int, int] | None) -> None:
    """Give the sandbox to the unprivileged user so the process can write its work dir."""
    if ids is None:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, *ids)
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), *ids, follow_symlinks=False)
