"""`klt dev build`: compile or fetch the stack's binaries into the build cache.

Everything comes from package registries (the Go module proxy, Maven Central,
npm, and Debian's apt for the Prometheus the evaluator's tests query), never
from release download sites, so the same steps work on a machine
that reaches only registries. Each artifact writes a stamp holding its recipe's
fingerprint once it is complete; a run finds the stamp and skips the artifact,
so a build interrupted half way resumes at the first artifact without one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from klt_cli.devstack import paths, versions
from klt_cli.devstack.proc import Progress, StackError, default_progress, file_lock, run_logged

STAMP = ".klt-stamp"
GO_BUILD_TIMEOUT = 90 * 60.0
FETCH_TIMEOUT = 20 * 60.0


@dataclass(frozen=True)
class Artifact:
    name: str
    directory: Path
    # Inputs to the recipe: a change to any of them invalidates the stamp.
    recipe: dict[str, object]
    # Name on PATH -> file inside directory.
    executables: dict[str, str]
    # Files that must exist for the artifact to count as complete.
    outputs: tuple[str, ...]
    build: Callable[[Artifact, Progress], None]
    # Checks a complete output without a stamp (say, from a build run by hand
    # before `klt dev build` existed) so it can be adopted instead of rebuilt.
    probe: Callable[[Artifact], bool]
    hint: str

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.recipe, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def stamp_path(self) -> Path:
        return self.directory / STAMP

    @property
    def log_path(self) -> Path:
        return self.directory / "build.log"

    def outputs_exist(self) -> bool:
        return all((self.directory / rel).is_file() for rel in self.outputs)

    def stamp(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.stamp_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def is_current(self) -> bool:
        data = self.stamp()
        return data is not None and data.get("fingerprint") == self.fingerprint

    def write_stamp(self, seconds: float | None, how: str) -> None:
        payload = {
            "fingerprint": self.fingerprint,
            "recipe": self.recipe,
            "how": how,
            "seconds": None if seconds is None else round(seconds, 1),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.stamp_path.write_text(json.dumps(payload, indent=2) + "\n")


@dataclass(frozen=True)
class BuildResult:
    name: str
    status: str  # "cached", "adopted" or "built"
    seconds: float


def _tool(name: str, install_hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StackError(f"`{name}` is not on PATH; {install_hint}")
    return found


def _go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Static binaries: no libc coupling between build and run machines.
    env["CGO_ENABLED"] = "0"
    # A fresh wrapper module has no vendor dir and its go.sum is filled by tidy.
    env["GOFLAGS"] = "-mod=mod"
    env.update(extra or {})
    return env


def _output_mentions_sumdb(log: Path) -> bool:
    text = log.read_text(errors="replace")[-20000:] if log.exists() else ""
    return "sum.golang.org" in text or "verifying module" in text or "SECURITY ERROR" in text


def _run_go(
    art: Artifact, argv: list[str], progress: Progress, label: str, timeout: float
) -> float:
    """Run a go command; retry once with GOSUMDB=off if only the checksum DB failed.

    The checksum database is a separate host from the module proxy; on machines
    that reach only the proxy it is the one thing that fails.
    """
    try:
        return run_logged(
            argv,
            cwd=art.directory,
            env=_go_env(),
            log_path=art.log_path,
            label=label,
            timeout=timeout,
            progress=progress,
        )
    except StackError:
        if os.environ.get("GOSUMDB") == "off" or not _output_mentions_sumdb(art.log_path):
            raise
        progress(f"{label}: checksum database unreachable, retrying with GOSUMDB=off")
        return run_logged(
            argv,
            cwd=art.directory,
            env=_go_env({"GOSUMDB": "off"}),
            log_path=art.log_path,
            label=label,
            timeout=timeout,
            progress=progress,
        )


def _version_output(path: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout + out.stderr


# --- Kubernetes ------------------------------------------------------------------


def k8s_go_mod() -> str:
    lines = [
        "module local/k8sbin",
        "",
        f"go {versions.K8S_GO_LINE}",
        "",
        f"godebug default={versions.K8S_GODEBUG}",
        "",
        f"require k8s.io/kubernetes v{versions.K8S_VERSION}",
        "",
        "replace (",
        *(
            f"\tk8s.io/{m} => k8s.io/{m} v{versions.K8S_STAGING_VERSION}"
            for m in versions.K8S_STAGING_MODULES
        ),
        ")",
    ]
    return "\n".join(lines) + "\n"


def _tools_go(packages: list[str]) -> str:
    imports = "\n".join(f'_ "{p}"' for p in packages)
    return f"//go:build tools\npackage tools\nimport (\n{imports}\n)\n"


def k8s_ldflags() -> str:
    # Without these the binaries say v0.0.0-master, which breaks kubeVersion
    # checks in charts and makes `kubectl version` skew warnings meaningless.
    v = versions.K8S_VERSION
    major, minor, _ = v.split(".")
    return " ".join(
        [
            f"-X k8s.io/component-base/version.gitVersion=v{v}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            f"-X k8s.io/client-go/pkg/version.gitVersion=v{v}",
        ]
    )


def _build_k8s(art: Artifact, progress: Progress) -> None:
    go = _tool("go", "install Go >= 1.24 (the machine image has /usr/local/go/bin)")
    art.directory.mkdir(parents=True, exist_ok=True)
    (art.directory / "go.mod").write_text(k8s_go_mod())
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in versions.K8S_COMMANDS]
    (art.directory / "tools.go").write_text(_tools_go(pkgs))
    progress(f"{art.name}: resolving modules (go mod tidy; ~1 GB of downloads on a fresh machine)")
    _run_go(art, [go, "mod", "tidy"], progress, f"{art.name} go mod tidy", FETCH_TIMEOUT)
    progress(
        f"{art.name}: compiling {', '.join(versions.K8S_COMMANDS)} (10-25 min cold on 2 cores)"
    )
    argv = [go, "build", "-trimpath", "-o", "bin/", "-ldflags", k8s_ldflags(), *pkgs]
    _run_go(art, argv, progress, f"{art.name} go build", GO_BUILD_TIMEOUT)


def _probe_k8s(art: Artifact) -> bool:
    want = f"v{versions.K8S_VERSION}"
    for name, rel in art.executables.items():
        args = ("version", "--client") if name == "kubectl" else ("--version",)
        if want not in _version_output(art.directory / rel, *args):
            return False
    return True


# --- etcd -------------------------------------------------------------------------


def etcd_go_mod() -> str:
    # etcd's server/go.mod carries `replace ../api` directives, so `go install
    # ...@version` refuses it; a wrapper module that requires it builds fine.
    return (
        f"module local/etcdbin\n\ngo {versions.ETCD_GO_LINE}\n\n"
        f"require go.etcd.io/etcd/server/v3 v{versions.ETCD_VERSION}\n"
    )


def _build_etcd(art: Artifact, progress: Progress) -> None:
    go = _tool("go", "install Go >= 1.25 (the machine image has /usr/local/go/bin)")
    art.directory.mkdir(parents=True, exist_ok=True)
    (art.directory / "go.mod").write_text(etcd_go_mod())
    (art.directory / "tools.go").write_text(_tools_go(["go.etcd.io/etcd/server/v3"]))
    progress(f"{art.name}: resolving modules (go mod tidy)")
    _run_go(art, [go, "mod", "tidy"], progress, f"{art.name} go mod tidy", FETCH_TIMEOUT)
    progress(f"{art.name}: compiling etcd (1-3 min cold)")
    argv = [go, "build", "-trimpath", "-o", "bin/etcd", "go.etcd.io/etcd/server/v3"]
    _run_go(art, argv, progress, f"{art.name} go build", GO_BUILD_TIMEOUT)


def _probe_etcd(art: Artifact) -> bool:
    out = _version_output(art.directory / "bin" / "etcd", "--version")
    return f"etcd Version: {versions.ETCD_VERSION}" in out


# --- Kafka ------------------------------------------------------------------------


def kafka_pom() -> str:
    return (
        "<project><modelVersion>4.0.0</modelVersion><groupId>local</groupId>"
        "<artifactId>kafka-dist</artifactId>\n <version>1</version><packaging>pom</packaging>"
        "<dependencies>\n"
        " <dependency><groupId>org.apache.kafka</groupId>"
        f"<artifactId>kafka_{versions.KAFKA_SCALA_VERSION}</artifactId>"
        f"<version>{versions.KAFKA_VERSION}</version></dependency>\n"
        " <dependency><groupId>org.apache.logging.log4j</groupId>"
        "<artifactId>log4j-slf4j-impl</artifactId>"
        f"<version>{versions.KAFKA_LOG4J_SLF4J_VERSION}</version></dependency>\n"
        "</dependencies></project>\n"
    )


def kafka_marker_jars() -> tuple[str, str]:
    return (
        f"lib/kafka_{versions.KAFKA_SCALA_VERSION}-{versions.KAFKA_VERSION}.jar",
        f"lib/log4j-slf4j-impl-{versions.KAFKA_LOG4J_SLF4J_VERSION}.jar",
    )


def _build_kafka(art: Artifact, progress: Progress) -> None:
    mvn = _tool("mvn", "install Maven (apt-get install maven) and a JDK >= 17")
    art.directory.mkdir(parents=True, exist_ok=True)
    (art.directory / "pom.xml").write_text(kafka_pom())
    # Copy into a fresh dir and swap it in, so a stale jar from an older
    # version never lands on the broker's classpath.
    staging = art.directory / "lib.new"
    shutil.rmtree(staging, ignore_errors=True)
    progress(f"{art.name}: fetching Kafka {versions.KAFKA_VERSION} jars from Maven Central")
    plugin = (
        "org.apache.maven.plugins:maven-dependency-plugin:"
        f"{versions.MAVEN_DEPENDENCY_PLUGIN_VERSION}:copy-dependencies"
    )
    argv = [
        mvn,
        "-B",
        "--no-transfer-progress",
        plugin,
        f"-DoutputDirectory={staging.name}",
        "-DincludeScope=runtime",
    ]
    run_logged(
        argv,
        cwd=art.directory,
        env=dict(os.environ),
        log_path=art.log_path,
        label=f"{art.name} mvn copy-dependencies",
        timeout=FETCH_TIMEOUT,
        progress=progress,
    )
    lib = art.directory / "lib"
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)


def _probe_kafka(art: Artifact) -> bool:
    return all((art.directory / rel).is_file() for rel in kafka_marker_jars())


# --- deno -------------------------------------------------------------------------


def deno_npm_package() -> str:
    # The `deno` npm package is a launcher whose optionalDependencies pull one
    # of these per platform; each ships the real, self-contained binary.
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if arch is None:
        raise StackError(f"no deno npm build for machine type {platform.machine()!r}")
    return f"@deno/linux-{arch}-glibc@{versions.DENO_VERSION}"


def _build_deno(art: Artifact, progress: Progress) -> None:
    npm = _tool("npm", "install Node.js and npm (apt-get install npm)")
    art.directory.mkdir(parents=True, exist_ok=True)
    for old in art.directory.glob("*.tgz"):
        old.unlink()
    pkg = deno_npm_package()
    progress(f"{art.name}: fetching {pkg} from the npm registry (~40 MB)")
    run_logged(
        [npm, "pack", "--silent", pkg],
        cwd=art.directory,
        env=dict(os.environ),
        log_path=art.log_path,
        label=f"{art.name} npm pack",
        timeout=FETCH_TIMEOUT,
        progress=progress,
    )
    tarballs = list(art.directory.glob("*.tgz"))
    if len(tarballs) != 1:
        raise StackError(f"{art.name}: npm pack left {len(tarballs)} tarballs in {art.directory}")
    target = art.directory / "bin" / "deno"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with tarfile.open(tarballs[0]) as tar:
        member = tar.extractfile("package/deno")
        if member is None:
            raise StackError(f"{art.name}: {tarballs[0]} has no package/deno")
        with member, tmp.open("wb") as out:
            shutil.copyfileobj(member, out)
    tmp.chmod(0o755)
    tmp.rename(target)
    tarballs[0].unlink()
    if not _probe_deno(art):
        raise StackError(f"{art.name}: {target} does not report deno {versions.DENO_VERSION}")


def _probe_deno(art: Artifact) -> bool:
    out = _version_output(art.directory / "bin" / "deno", "--version")
    return re.search(rf"^deno {re.escape(versions.DENO_VERSION)}\b", out, re.MULTILINE) is not None


# --- prometheus -------------------------------------------------------------------
#
# The evaluator's integration tests query a real Prometheus. Debian ships one, so this artifact
# installs the distribution package (through apt, a package registry like the others) rather
# than a release download. Only the binary is used: the tests start their own process with a
# temporary data dir on a loopback port, so the package's own service must never run.


def _prometheus_pids() -> set[int]:
    """Pids of running processes whose executable is the distribution's prometheus binary."""
    found: set[int] = set()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            exe = os.readlink(proc_dir / "exe")
        except OSError:
            continue
        if exe == versions.PROMETHEUS_BINARY:
            found.add(int(proc_dir.name))
    return found


def _install_prometheus(art: Artifact, progress: Progress) -> None:
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise StackError(
            f"{art.name}: {versions.PROMETHEUS_BINARY} is missing and apt-get is not available; "
            f"install Prometheus {versions.PROMETHEUS_MIN_MAJOR}.x so that "
            f"{versions.PROMETHEUS_BINARY} exists"
        )
    if os.geteuid() != 0:
        raise StackError(
            f"{art.name}: {versions.PROMETHEUS_BINARY} is missing and installing it needs root; "
            f"run `sudo apt-get install -y --no-install-recommends "
            f"{versions.PROMETHEUS_DEB_PACKAGE}` (its service need not run)"
        )
    env = dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    # policy-rc.d answering 101 ("action forbidden") is Debian's documented way to keep a
    # package's postinst from starting its daemon (invoke-rc.d and deb-systemd-invoke honour it).
    # Only a policy file we created is removed again.
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = False
    if not policy.exists():
        policy.write_text(
            "#!/bin/sh\n# written by klt dev build while installing prometheus\nexit 101\n"
        )
        policy.chmod(0o755)
        created_policy = True
    before = _prometheus_pids()
    try:
        progress(f"{art.name}: apt-get update (package lists)")
        run_logged(
            [apt_get, "update"],
            cwd=art.directory,
            env=env,
            log_path=art.log_path,
            label=f"{art.name} apt-get update",
            timeout=FETCH_TIMEOUT,
            progress=progress,
        )
        progress(f"{art.name}: apt-get install {versions.PROMETHEUS_DEB_PACKAGE} (~30 MB)")
        run_logged(
            [
                apt_get,
                "install",
                "-y",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
                versions.PROMETHEUS_DEB_PACKAGE,
            ],
            cwd=art.directory,
            env=env,
            log_path=art.log_path,
            label=f"{art.name} apt-get install",
            timeout=FETCH_TIMEOUT,
            progress=progress,
        )
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)
        # Belt and braces: a daemon the install started anyway (an init system that ignores
        # policy-rc.d) would hold port 9090 and scrape forever; stop exactly the new ones.
        for pid in sorted(_prometheus_pids() - before):
            progress(f"{art.name}: stopping the prometheus daemon the package started (pid {pid})")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)


def _build_prometheus(art: Artifact, progress: Progress) -> None:
    binary = Path(versions.PROMETHEUS_BINARY)
    if binary.is_file():
        progress(f"{art.name}: using the installed {binary}")
    else:
        _install_prometheus(art, progress)
    if not binary.is_file():
        raise StackError(f"{art.name}: the package did not install {binary}; log {art.log_path}")
    link = art.directory / "bin" / "prometheus"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(binary)


def _probe_prometheus(art: Artifact) -> bool:
    out = _version_output(art.directory / "bin" / "prometheus", "--version")
    return re.search(rf"prometheus, version {versions.PROMETHEUS_MIN_MAJOR}\.", out) is not None


# --- helm -------------------------------------------------------------------------


def helm_go_mod() -> str:
    return (
        f"module local/helmbin\n\ngo {versions.HELM_GO_LINE}\n\n"
        f"require helm.sh/helm/v3 v{versions.HELM_VERSION}\n"
    )


def helm_ldflags() -> str:
    # Without it `helm version` says "v3.21" and charts' kubeVersion/helm checks see no patch.
    return f"-X helm.sh/helm/v3/internal/version.version=v{versions.HELM_VERSION}"


def _build_helm(art: Artifact, progress: Progress) -> None:
    go = _tool("go", f"install Go >= {versions.HELM_GO_LINE} (the machine image has it)")
    art.directory.mkdir(parents=True, exist_ok=True)
    (art.directory / "go.mod").write_text(helm_go_mod())
    (art.directory / "tools.go").write_text(_tools_go(["helm.sh/helm/v3/cmd/helm"]))
    progress(f"{art.name}: resolving modules (go mod tidy)")
    _run_go(art, [go, "mod", "tidy"], progress, f"{art.name} go mod tidy", FETCH_TIMEOUT)
    progress(f"{art.name}: compiling helm (2-5 min cold)")
    argv = [
        go,
        "build",
        "-trimpath",
        "-ldflags",
        helm_ldflags(),
        "-o",
        "bin/helm",
        "helm.sh/helm/v3/cmd/helm",
    ]
    _run_go(art, argv, progress, f"{art.name} go build", GO_BUILD_TIMEOUT)


def _probe_helm(art: Artifact) -> bool:
    out = _version_output(art.directory / "bin" / "helm", "version", "--template", "{{.Version}}")
    return out.strip() == f"v{versions.HELM_VERSION}"


# --- the catalogue ------------------------------------------------------------------


def artifacts(cache: Path | None = None) -> list[Artifact]:
    root = cache or paths.cache_dir()
    return [
        Artifact(
            name="kafka",
            directory=root / "kafka",
            recipe={"pom": kafka_pom(), "plugin": versions.MAVEN_DEPENDENCY_PLUGIN_VERSION},
            executables={},
            outputs=kafka_marker_jars(),
            build=_build_kafka,
            probe=_probe_kafka,
            hint="Maven Central, ~1 min",
        ),
        Artifact(
            name="deno",
            directory=root / "deno",
            recipe={"npm": deno_npm_package()},
            executables={"deno": "bin/deno"},
            outputs=("bin/deno",),
            build=_build_deno,
            probe=_probe_deno,
            hint="npm registry, seconds",
        ),
        Artifact(
            name="etcd",
            directory=root / "etcd",
            recipe={"go.mod": etcd_go_mod(), "cgo": 0, "flags": "-trimpath"},
            executables={"etcd": "bin/etcd"},
            outputs=("bin/etcd",),
            build=_build_etcd,
            probe=_probe_etcd,
            hint="Go module proxy, 1-3 min",
        ),
        Artifact(
            name="kubernetes",
            directory=root / "k8sbin",
            recipe={
                "go.mod": k8s_go_mod(),
                "ldflags": k8s_ldflags(),
                "cgo": 0,
                "flags": "-trimpath",
                "commands": list(versions.K8S_COMMANDS),
            },
            executables={c: f"bin/{c}" for c in versions.K8S_COMMANDS},
            outputs=tuple(f"bin/{c}" for c in versions.K8S_COMMANDS),
            build=_build_k8s,
            probe=_probe_k8s,
            hint="Go module proxy, 10-25 min cold",
        ),
        Artifact(
            name="prometheus",
            directory=root / "prometheus",
            recipe={
                "package": versions.PROMETHEUS_DEB_PACKAGE,
                "binary": versions.PROMETHEUS_BINARY,
                "major": versions.PROMETHEUS_MIN_MAJOR,
            },
            executables={"prometheus": "bin/prometheus"},
            outputs=("bin/prometheus",),
            build=_build_prometheus,
            probe=_probe_prometheus,
            hint="Debian package via apt-get, ~1 min; skipped when already installed",
        ),
        Artifact(
            name="helm",
            directory=root / "helm",
            recipe={
                "go.mod": helm_go_mod(),
                "ldflags": helm_ldflags(),
                "cgo": 0,
                "flags": "-trimpath",
            },
            executables={"helm": "bin/helm"},
            outputs=("bin/helm",),
            build=_build_helm,
            probe=_probe_helm,
            hint="Go module proxy, 2-5 min cold",
        ),
    ]


def kafka_lib_dir(cache: Path | None = None) -> Path:
    return (cache or paths.cache_dir()) / "kafka" / "lib"


def _link_bin_dir(cache: Path, arts: list[Artifact]) -> None:
    bindir = paths.bin_dir(cache)
    bindir.mkdir(parents=True, exist_ok=True)
    for art in arts:
        for name, rel in art.executables.items():
            link = bindir / name
            target = os.path.relpath(art.directory / rel, bindir)
            if link.is_symlink() and os.readlink(link) == target:
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)


def missing_artifacts(cache: Path | None = None) -> list[str]:
    """Names of artifacts without a current stamp; cheap (no exec)."""
    return [a.name for a in artifacts(cache) if not (a.is_current() and a.outputs_exist())]


def build_all(
    cache: Path | None = None, *, progress: Progress = default_progress, force: bool = False
) -> list[BuildResult]:
    """Make every artifact current; seconds when all are stamped already."""
    root = cache or paths.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    arts = artifacts(root)
    results: list[BuildResult] = []
    # Two `klt dev up` runs on a fresh machine must not run two 20-minute builds
    # into the same directory; the second one waits and then finds the stamps.
    with file_lock(root / ".build.lock", timeout=GO_BUILD_TIMEOUT + 600, what="build"):
        for art in arts:
            start = time.monotonic()
            if not force and art.is_current() and art.outputs_exist():
                results.append(BuildResult(art.name, "cached", 0.0))
                continue
            if not force and art.stamp() is None and art.outputs_exist() and art.probe(art):
                art.write_stamp(None, "adopted an existing build whose version matched")
                progress(f"{art.name}: adopted existing build in {art.directory}")
                results.append(BuildResult(art.name, "adopted", time.monotonic() - start))
                continue
            progress(f"{art.name}: building ({art.hint}); log {art.log_path}")
            art.directory.mkdir(parents=True, exist_ok=True)
            art.stamp_path.unlink(missing_ok=True)
            art.build(art, progress)
            if not art.outputs_exist() or not art.probe(art):
                raise StackError(
                    f"{art.name}: build finished but its outputs fail the version check; "
                    f"log {art.log_path}"
                )
            seconds = time.monotonic() - start
            art.write_stamp(seconds, "built")
            progress(f"{art.name}: built in {seconds:.0f}s")
            results.append(BuildResult(art.name, "built", seconds))
        _link_bin_dir(root, arts)
    return results
