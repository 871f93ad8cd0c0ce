"""Entry point: ``klt-evaluator`` or ``python -m klt_evaluator``."""

from __future__ import annotations

from klt_common.service import run_service
from klt_evaluator.app import setup
from klt_evaluator.settings import EvaluatorSettings


def main() -> None:
    run_service(EvaluatorSettings(), setup)


if __name__ == "__main__":
    main()
