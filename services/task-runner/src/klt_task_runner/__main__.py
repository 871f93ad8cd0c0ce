"""Entry point: ``klt-task-runner`` or ``python -m klt_task_runner``."""

from __future__ import annotations

from klt_common.service import run_service
from klt_task_runner.app import setup
from klt_task_runner.settings import TaskRunnerSettings


def main() -> None:
    run_service(TaskRunnerSettings(), setup)


if __name__ == "__main__":
    main()
