"""The webhook's settings: defaults as Keptn's, the dev stack's environment, and the checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from klt_cli.devstack import stack as devstack
from klt_webhook.settings import CertSettings, WebhookSettings


def test_defaults_follow_keptn() -> None:
    settings = WebhookSettings()
    assert settings.admission.port == 9443
    assert settings.certs.mode == "self-managed"
    assert settings.certs.secret_name == "klt-certs"
    assert settings.certs.ca_validity_seconds == 365 * 24 * 3600
    assert settings.certs.cert_validity_seconds == 7 * 24 * 3600
    assert settings.certs.renew_before_seconds == 12 * 3600
    assert settings.registration.mode == "service"
    assert settings.registration.failure_policy == "Fail"
    assert settings.registration.timeout_seconds == 5
    assert settings.registration.pod_operations == ("CREATE",)


def test_the_dev_stacks_environment_gives_url_mode_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (spec,) = [s for s in devstack.SERVICES if s.module == "klt_webhook"]
    for key, value in spec.env.items():
        monkeypatch.setenv(key, value)
    settings = WebhookSettings()
    assert settings.cluster.namespace == "klt-system"
    assert (settings.admission.host, settings.admission.port) == (
        "127.0.0.1",
        devstack.WEBHOOK_ADMISSION_PORT,
    )
    assert settings.observability.http_port == spec.port
    assert settings.certs.extra_ip_addresses == ("127.0.0.1",)
    assert settings.registration.mode == "url"
    assert settings.registration.url_host == "127.0.0.1"
    assert settings.registration.create_namespace
    assert f"https://127.0.0.1:{settings.admission.port}/convert" == devstack.WEBHOOK_CONVERT_URL


@pytest.mark.parametrize(
    "values",
    [
        {"renew_before_seconds": 10, "cert_validity_seconds": 10},
        {"renew_before_seconds": 10, "ca_validity_seconds": 5, "cert_validity_seconds": 20},
        {"extra_ip_addresses": ("not-an-ip",)},
    ],
)
def test_impossible_certificate_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CertSettings(**values)  # type: ignore[arg-type]
