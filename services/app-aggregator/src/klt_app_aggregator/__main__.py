"""Entry point: ``klt-app-aggregator`` or ``python -m klt_app_aggregator``."""

from __future__ import annotations

from klt_app_aggregator.app import setup
from klt_app_aggregator.settings import AppAggregatorSettings
from klt_common.service import run_service


def main() -> None:
    run_service(AppAggregatorSettings(), setup)


if __name__ == "__main__":
    main()
