"""One consumer-group member, run as its own OS process by the kill test.

Usage: python bus_member.py BOOTSTRAP PREFIX GROUP WORKDIR NAME

The handler's effect is idempotent by CloudEvent id, the way real klt handlers must be: it
creates ``WORKDIR/effects/<id>`` with O_CREAT|O_EXCL (atomic), so a redelivered event whose
effect already happened finds the file and only records the redelivery (``redeliveries/``).
Every handler invocation also leaves a file in ``attempts/``, so the test can count how many
deliveries Kafka made in total. SIGTERM stops the member gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import uuid
from pathlib import Path

from klt_common.clients import bus
from klt_common.configs.settings import BusSettings
from klt_common.structs import events

WORK_BEFORE_EFFECT = 0.004
WORK_AFTER_EFFECT = 0.008
"""Simulated work around the effect (e.g. reading the object first, publishing a follow-up
event after), so that at the kill a record is likely in flight, and most likely with its
effect already done: the case idempotency exists for."""


async def main(bootstrap: str, prefix: str, group: str, workdir: Path, name: str) -> None:
    settings = BusSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=6,
        # 6 s is the broker's default minimum session timeout: the survivor takes over the
        # killed member's partitions at most this long after the kill.
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        handler_retry_delays=(0.05,),
        connect_retry_delays=(0.5, 1.0),
        drain_grace_seconds=3.0,
    )
    for sub in ("effects", "redeliveries", "attempts"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)

    async def handle(event: events.Envelope[events.TaskRequested], where: bus.Coordinates) -> None:
        (workdir / "attempts" / f"{event.id}.{name}.{uuid.uuid4().hex}").touch()
        await asyncio.sleep(WORK_BEFORE_EFFECT)
        try:
            fd = os.open(workdir / "effects" / event.id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            (workdir / "redeliveries" / f"{event.id}.{name}.{uuid.uuid4().hex}").touch()
        else:
            try:
                os.write(fd, f"{name} {where.partition} {where.offset}".encode())
            finally:
                os.close(fd)
        await asyncio.sleep(WORK_AFTER_EFFECT)

    consumer = bus.Consumer(settings, group_id=group, client_id=name)
    consumer.register(events.TaskRequested, handle)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.run(stop)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {sys.argv[5]} %(name)s %(levelname)s %(message)s"
    )
    bootstrap, prefix, group, workdir, name = sys.argv[1:6]
    asyncio.run(main(bootstrap, prefix, group, Path(workdir), name))
