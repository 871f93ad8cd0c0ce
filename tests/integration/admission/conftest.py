"""Fixtures for the admission tests (see admission_kit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from admission_kit import RunningWebhook, start_webhook

from klt_common.configs.settings import ClusterSettings
from klt_webhook.settings import PodAdmissionSettings


@pytest.fixture(scope="module")
def webhook(kafka_bootstrap: str, cluster_settings: ClusterSettings) -> Iterator[RunningWebhook]:
    running, thread, loop, stop = start_webhook(
        kafka_bootstrap, cluster_settings, PodAdmissionSettings()
    )
    yield running
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
