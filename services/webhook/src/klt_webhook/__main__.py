"""Entry point: ``klt-webhook`` or ``python -m klt_webhook``."""

from __future__ import annotations

from klt_common.service import run_service
from klt_webhook.app import setup
from klt_webhook.settings import WebhookSettings


def main() -> None:
    run_service(WebhookSettings(), setup)


if __name__ == "__main__":
    main()
