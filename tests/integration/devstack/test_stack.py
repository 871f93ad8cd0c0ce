"""The dev stack comes up (or is reused) and each piece answers like the real thing.

These tests leave the stack running: other suites and developers share it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from klt_cli.devstack import health, paths
from klt_cli.devstack.stack import Stack, StackInfo, crd_names, ensure_up

# A cold first run compiles Kubernetes (10-25 min on 2 cores); later runs take seconds.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]


def _klt(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klt_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def devstack() -> StackInfo:
    return ensure_up(services=False)


def test_up_reuses_a_healthy_stack_in_seconds(devstack: StackInfo) -> None:
    before = {s.name: s.pid for s in Stack().status()}
    start = time.monotonic()
    again = ensure_up(services=False)
    elapsed = time.monotonic() - start
    after = {s.name: s.pid for s in Stack().status()}
    assert again == devstack
    assert after == before, "a healthy stack must be reused, not restarted"
    assert elapsed < 20, f"reusing the stack took {elapsed:.1f}s"


def test_status_exits_zero_when_all_healthy(devstack: StackInfo) -> None:
    result = _klt("dev", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("kafka", "etcd", "apiserver", "controller-manager", "scheduler"):
        assert name in result.stdout


def test_kubectl_readyz_with_dev_env(devstack: StackInfo) -> None:
    env_out = _klt("dev", "env")
    assert env_out.returncode == 0, env_out.stderr
    assert f"export KUBECONFIG={devstack.kubeconfig}" in env_out.stdout
    assert f"export KLT_KAFKA_BOOTSTRAP={devstack.kafka_bootstrap}" in env_out.stdout
    # kubectl must come from the stack's bin dir, found only through the PATH the
    # eval sets, so start from a PATH without it.
    clean = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
    clean["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    script = (
        f'eval "$({sys.executable} -m klt_cli.main dev env)" && '
        "command -v kubectl && command -v deno && command -v etcd && kubectl get --raw /readyz"
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=clean, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.split()
    assert lines[0] == str(devstack.bin_dir / "kubectl")
    assert lines[-1] == "ok"


def test_stackinfo_round_trips_through_the_environment(devstack: StackInfo) -> None:
    assert StackInfo.from_env(devstack.env()) == devstack
    assert devstack.token


def test_kafka_probe_without_aiokafka(devstack: StackInfo) -> None:
    host, port = devstack.kafka_bootstrap.rsplit(":", 1)
    meta = health.kafka_metadata(host, int(port))
    assert [(b.host, b.port) for b in meta.brokers] == [(host, int(port))]
    assert meta.cluster_id


async def test_kafka_answers_metadata_and_round_trips_a_record(devstack: StackInfo) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=devstack.kafka_bootstrap)
    await admin.start()
    topic = f"klt-devstack-test-{uuid.uuid4().hex[:8]}"
    try:
        cluster = await admin.describe_cluster()
        assert len(cluster["brokers"]) == 1
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=devstack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=devstack.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        assert [m.value for m in batch.get(tp, [])] == [b"hello"]
    finally:
        await consumer.stop()


def _repo_crd_names() -> list[str]:
    directory = paths.crd_dir()
    if directory is None or not directory.is_dir():
        return []
    return crd_names(sorted(directory.glob("*.y*ml")))


def test_repo_crds_are_established(devstack: StackInfo) -> None:
    names = _repo_crd_names()
    if not names:
        pytest.skip("deploy/crds holds no CustomResourceDefinitions yet")
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    for name in names:
        result = subprocess.run(
            [str(devstack.bin_dir / "kubectl"), "get", f"crd/{name}", "-o", f"jsonpath={jsonpath}"],
            capture_output=True,
            text=True,
            env=devstack.env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "True", f"{name} is not Established"
