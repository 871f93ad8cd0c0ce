"""Entry point: ``klt-scheduler`` or ``python -m klt_scheduler``."""

from __future__ import annotations

from klt_common.service import run_service
from klt_scheduler.app import setup
from klt_scheduler.settings import SchedulerSettings


def main() -> None:
    run_service(SchedulerSettings(), setup)


if __name__ == "__main__":
    main()
