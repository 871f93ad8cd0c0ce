"""Fixtures for the fault-injection suite (see faults_kit).

- ``private_kafka`` (session): a Kafka broker of the suite's own, started with the dev stack's
  own start code (same jars, same configuration) on free ports with its own data dir. Tests
  kill their services and restart this broker; the stack's broker on 9092, which other tests
  share, is never touched.
- ``fault_proxy`` (session): the apiserver fault proxy (apiproxy_kit) on a thread of its own,
  with its faults off until a test switches them on.
- ``fleet`` (session): the app-aggregator, scheduler, task-runner and evaluator as processes of
  the suite's own, on the private broker, a topic prefix and a shard of their own, reaching the
  apiserver through ``fault_proxy``. Tests kill and restart its members, restart its broker and
  inject apiserver faults; starting four services once rather than per test keeps the short
  suite short.
- ``scope``: a fresh namespace handed to the fleet's shard.

The three session resources are stopped as soon as the last test of this directory has run
(see ``pytest_runtest_teardown``), and every fleet service must then have stopped cleanly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from apiproxy_kit import FaultProxy, ProxyThread, proxy_kubeconfig
from faults_kit import (
    SERVICE_MODULES,
    PrivateKafka,
    Scope,
    ServiceProcess,
    free_port,
)

from klt_cli.devstack import stack as devstack
from klt_cli.devstack.proc import quiet_progress

HERE = Path(__file__).resolve().parent


def _ours(item: pytest.Item | None) -> bool:
    return item is not None and Path(str(item.fspath)).resolve().is_relative_to(HERE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _ours(item):
            item.add_marker(pytest.mark.faults)


# What the session fixtures below started, to stop in reverse order. They are session-scoped so
# that every test of the suite shares them, but the rest of the run (the suite sits in the middle
# of tests/integration) should not carry four idle services and a JVM: they are stopped as soon
# as the last test of this directory has finished, and at the session's end otherwise.
_CLOSERS: list[Callable[[], None]] = []
FLEET_EXIT_CODES: dict[str, int | None] = {}


def _close_all() -> None:
    while _CLOSERS:
        _CLOSERS.pop()()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _ours(item) and not _ours(nextitem):
        _close_all()
        # Whatever was done to them, the fleet's services must stop cleanly on SIGTERM.
        unclean = {name: code for name, code in FLEET_EXIT_CODES.items() if code != 0}
        assert not unclean, f"fleet services did not stop cleanly (exit codes {unclean})"


@pytest.fixture(scope="session")
def private_kafka(stack: object) -> Iterator[PrivateKafka]:
    state = Path(tempfile.mkdtemp(prefix="klt-faults-kafka-"))
    port = free_port()
    controller = free_port()
    while controller == port:
        controller = free_port()
    broker = devstack.Stack(
        state,
        stack.cache_dir,  # type: ignore[attr-defined]
        overrides={"kafka_port": port, "kafka_controller_port": controller, "kafka_heap_mb": 384},
        progress=quiet_progress,
    )
    kafka = PrivateKafka(broker, port)

    def close() -> None:
        kafka.stop()
        shutil.rmtree(state, ignore_errors=True)

    _CLOSERS.append(close)
    kafka.start()
    yield kafka
    _close_all()


@pytest.fixture(scope="session")
def fleet_scope(kubeconfig: str, private_kafka: PrivateKafka) -> Scope:
    return Scope(
        namespace="",
        shard=f"faults-{uuid.uuid4().hex[:8]}",
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        bootstrap=private_kafka.bootstrap,
        kubeconfig=kubeconfig,
    )


@pytest.fixture(scope="session")
def fault_proxy(
    stack: object, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FaultProxy, Path]]:
    """The proxy, and a kubeconfig that reaches the apiserver through it."""
    proxy = FaultProxy(
        upstream=stack.apiserver_url,  # type: ignore[attr-defined]
        ca_file=stack.ca_file,  # type: ignore[attr-defined]
        seed=random.randrange(1 << 30),
        enabled=False,
    )
    running = ProxyThread(proxy)
    running.start()
    _CLOSERS.append(running.close)
    config = proxy_kubeconfig(
        Path(kubeconfig), proxy.url, tmp_path_factory.mktemp("proxy") / "kubeconfig"
    )
    yield proxy, config
    _close_all()


@pytest.fixture(scope="session")
async def fleet(
    fleet_scope: Scope,
    fault_proxy: tuple[FaultProxy, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, ServiceProcess]]:
    log_dir = tmp_path_factory.mktemp("fleet")
    env = {
        "KLT_CLUSTER__KUBECONFIG": str(fault_proxy[1]),
        # A short resync: the webhook-down test waits for the aggregator's periodic discovery.
        "KLT_AGGREGATION__RESYNC_SECONDS": "2",
    }
    members = {name: ServiceProcess(name, fleet_scope, log_dir, env) for name in SERVICE_MODULES}

    def close() -> None:
        for member in members.values():  # all at once: they shut down side by side
            member.terminate()
        FLEET_EXIT_CODES.update({name: m.stop() for name, m in members.items()})

    _CLOSERS.append(close)
    await asyncio.gather(*(m.start() for m in members.values()))
    yield members
    _close_all()


@pytest.fixture
async def scope(namespace_factory: Callable[..., Awaitable[str]], fleet_scope: Scope) -> Scope:
    """A fresh namespace handed to the fleet's shard (deleted after the test)."""
    ns = await namespace_factory(fleet_scope.namespace_labels())
    return dataclasses.replace(fleet_scope, namespace=ns)
