"""The `klt` command."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from klt_cli import bench, checks, demo, ops
from klt_cli.devstack import build, paths
from klt_cli.devstack.proc import StackError
from klt_cli.devstack.stack import Stack


def _add_port_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka-port", type=int, help="Kafka client port (default 9092)")
    p.add_argument("--apiserver-port", type=int, help="kube-apiserver port (default 6443)")
    p.add_argument("--etcd-port", type=int, help="etcd client port (default 2379)")


def _overrides(args: argparse.Namespace) -> dict[str, int]:
    pairs = {
        "kafka_port": args.kafka_port,
        "apiserver_port": args.apiserver_port,
        "etcd_port": args.etcd_port,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _cmd_build(args: argparse.Namespace) -> int:
    results = build.build_all(force=args.force)
    for r in results:
        print(f"{r.name:<12} {r.status:<8} {r.seconds:7.1f}s")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    stack = Stack(overrides=_overrides(args))
    try:
        stack.up(
            services=not args.no_services, build_missing=not args.no_build, timeout=args.timeout
        )
    except StackError as exc:
        # Components that did start are left running for inspection.
        raise StackError(
            f"{exc}\n(see `klt dev status`; `klt dev down` stops what did start)"
        ) from None
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    Stack().down(purge=args.purge)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    stack = Stack()
    rows = stack.status()
    healthy = bool(rows) and all(r.healthy for r in rows)
    if args.json:
        payload = [
            {
                "name": r.name,
                "pid": r.pid,
                "alive": r.alive,
                "healthy": r.healthy,
                "port": r.port,
                "log": str(r.log),
                "detail": r.detail,
                "rss_kib": r.rss_kib,
            }
            for r in rows
        ]
        print(json.dumps({"state_dir": str(stack.state), "components": payload}, indent=2))
        return 0 if healthy else 1
    header = ("COMPONENT", "PID", "ALIVE", "HEALTHY", "PORT", "RSS", "LOG")
    table = [header]
    for r in rows:
        rss = "-" if r.rss_kib is None else f"{r.rss_kib // 1024}M"
        table.append(
            (
                r.name,
                "-" if r.pid is None else str(r.pid),
                "yes" if r.alive else "no",
                "yes" if r.healthy else "no",
                "-" if r.port is None else str(r.port),
                rss,
                str(r.log),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
        print("  ".join([*cells, row[-1]]))
    for r in rows:
        if r.alive and not r.healthy:
            print(f"{r.name}: {r.detail}", file=sys.stderr)
    print(f"state: {stack.state}", file=sys.stderr)
    return 0 if healthy else 1


def _cmd_env(args: argparse.Namespace) -> int:
    del args
    sys.stdout.write(Stack().info().shell_exports())
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    root = paths.repo_root()
    if root is None:
        raise StackError("klt test runs from a klt checkout (set KLT_REPO_ROOT)")
    extra = list(args.pytest_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    return checks.run(root, extra, static=not args.no_static, stack=not args.no_stack)


def _cmd_bench(args: argparse.Namespace) -> int:
    flags = ["--quick"] * args.quick + (["--only", *args.only] if args.only else [])
    command = shlex.join(["./klt", "bench", *flags])  # stored with each result
    names = args.only or list(bench.NAMES)
    return bench.run(names, quick=args.quick, command=command, render_only=args.render_only)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="klt", description="klt release-lifecycle toolkit")
    top = parser.add_subparsers(dest="command", required=True)

    dev = top.add_parser("dev", help="the local dev stack (Kafka + Kubernetes control plane)")
    sub = dev.add_subparsers(dest="dev_command", required=True)

    p = sub.add_parser("build", help="build or fetch the stack's binaries into the cache")
    p.add_argument("--force", action="store_true", help="rebuild even when stamped")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("up", help="start the stack, or reuse the running one")
    p.add_argument("--no-services", action="store_true", help="infrastructure only")
    p.add_argument("--no-build", action="store_true", help="fail instead of building")
    p.add_argument("--timeout", type=float, help="seconds to wait for each component")
    _add_port_flags(p)
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("down", help="stop every process (keeps the build cache)")
    p.add_argument("--purge", action="store_true", help="also delete the state dir (data)")
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser("status", help="each component's pid, health, port and log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("env", help='shell exports: eval "$(klt dev env)"')
    p.set_defaults(func=_cmd_env)

    ops.add_commands(top)

    p = top.add_parser("demo", help="run the podtato-head example on the local stack, live")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Completed")
    p.add_argument("--keep", action="store_true", help="do not delete the example namespace first")
    p.set_defaults(func=lambda a: demo.run(timeout=a.timeout, keep=a.keep))

    p = top.add_parser(
        "bench",
        help="run the benchmarks in bench/ on the running local stack; update "
        "bench/results, docs/img and docs/performance.md",
    )
    p.add_argument("--quick", action="store_true", help="smaller runs: a few minutes in all")
    p.add_argument(
        "--only",
        nargs="+",
        choices=bench.NAMES,
        metavar="NAME",
        help=f"run only these ({', '.join(bench.NAMES)})",
    )
    p.add_argument(
        "--render-only", action="store_true", help="run nothing; redraw from bench/results"
    )
    p.set_defaults(func=_cmd_bench)

    p = top.add_parser("test", help="static checks and the whole test suite (what CI runs)")
    p.add_argument("--no-static", action="store_true", help="skip ruff, mypy, import-linter")
    p.add_argument("--no-stack", action="store_true", help="do not start the local stack")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest after --")
    p.set_defaults(func=_cmd_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except StackError as exc:
        print(f"klt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
