"""Process plumbing for the dev stack: detached spawns, liveness, stopping, logged runs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A dev stack step failed; the message says what, and which log to read."""


def default_progress(message: str) -> None:
    print(f"klt dev: {message}", file=sys.stderr, flush=True)


def quiet_progress(message: str) -> None:
    del message


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, for error messages; never raises."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(data.splitlines()[-lines:])


def last_line(path: Path) -> str:
    text = tail(path, 5).strip().splitlines()
    return text[-1][:160] if text else ""


def spawn_detached(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> int:
    """Start argv in its own session with stdio on log_path; returns the pid.

    posix_spawn rather than subprocess.Popen: there is no Popen object whose
    finaliser would warn that a child is "still running" when the CLI or a test
    process exits, which is exactly what a detached daemon is meant to do.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as f:
        f.write(f"\n=== klt dev {_stamp()} start: {shlex.join(argv)}\n")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        return os.posix_spawn(
            argv[0],
            list(argv),
            dict(env),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null_fd, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
        os.close(null_fd)


def is_alive(pid: int, marker: str | None = None) -> bool:
    """Whether pid runs and (when marker is given) its command line contains marker.

    The marker guards against a recycled pid after a reboot or a long pause.
    """
    # When this process spawned pid (tests calling ensure_up), a dead child stays
    # a zombie until reaped; reap it so it reads as dead.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    # An empty command line means the process is mid-exec (posix_spawn returns
    # before the kernel has set up the new argv) or mid-exit (still holding its
    # ports): alive either way.
    return marker is None or not cmdline or marker.encode() in cmdline


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each daemon leads its own session, so its process group holds its children
    # too (the node agent's pod processes, a JVM's helpers).
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        return


def stop_all(targets: Sequence[tuple[str, int, str]], grace: float, progress: Progress) -> None:
    """SIGTERM every (name, pid, marker), wait up to grace seconds, then SIGKILL."""
    live = [(n, p, m) for n, p, m in targets if is_alive(p, m)]
    for name, pid, _ in live:
        progress(f"{name:<18} stopping (pid {pid})")
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.2)
        live = [(n, p, m) for n, p, m in live if is_alive(p, m)]
    for name, pid, _ in live:
        progress(f"{name:<18} still running after {grace:.0f}s; SIGKILL")
        _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = [(n, p, m) for n, p, m in live if is_alive(p, m)]


def run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    label: str,
    timeout: float,
    progress: Progress,
    heartbeat: float = 30.0,
) -> float:
    """Run argv to completion with output appended to log_path; returns seconds taken.

    Long builds print a heartbeat with the newest log line so that a fresh
    machine's 20-minute compile never looks hung.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as f:
        f.write(f"\n=== {_stamp()} (cwd {cwd}) $ {shlex.join(argv)}\n")
    start = time.monotonic()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        next_beat = start + heartbeat
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if now - start > timeout:
                        proc.kill()
                        proc.wait()
                        raise StackError(
                            f"{label}: timed out after {timeout:.0f}s; log {log_path}:\n"
                            f"{tail(log_path)}"
                        ) from None
                    if now >= next_beat:
                        next_beat = now + heartbeat
                        mins, secs = divmod(int(now - start), 60)
                        progress(
                            f"{label}: still running ({mins}m{secs:02d}s) {last_line(log_path)}"
                        )
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    elapsed = time.monotonic() - start
    with log_path.open("a", encoding="utf-8") as f:
        f.write(f"=== exit {rc}; real {elapsed:.1f}s\n")
    if rc != 0:
        raise StackError(f"{label}: exited {rc}; log {log_path}:\n{tail(log_path)}")
    return elapsed


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float, what: str) -> Iterator[None]:
    """An exclusive flock so that two `klt dev up` runs do not race each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"another klt process holds {path} ({what}) for over {timeout:.0f}s"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
