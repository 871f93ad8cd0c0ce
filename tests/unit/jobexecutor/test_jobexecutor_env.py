"""A task's environment: event values in the three formats, literals, Secret references, and the
variables every job gets (KEPTN_*, LABELS_*), in JES's wording and formatting.
"""

from __future__ import annotations

from typing import Any

import pytest

from klt_task_runner.jobexecutor import cloudevents, config, envs

EVENT: dict[str, Any] = {
    "data": {
        "deployment": {
            "deploymentURIsLocal": ["https://keptn.sh", "https://keptn2.sh"],
            "deploymentstrategy": "user_managed",
        },
        "test": {"teststrategy": "health"},
        "html": "<a href='x'>&</a>",
        "count": 4711,
        "big": 1000000,
        "ratio": 0.25,
        "nothing": None,
        "flag": True,
        "nested": [{"b": 1, "a": "x"}, [1, 2]],
    },
}


def _env(value: str, fmt: str = "") -> config.EnvVar:
    return config.EnvVar.model_validate(
        {"name": "V", "value": value, "valueFrom": "event", "as": fmt}, by_alias=True
    )


def _value(path: str, fmt: str = "") -> str:
    entry = envs.event_entry(_env(path, fmt), EVENT)
    assert entry["name"] == "V"
    return str(entry["value"])


@pytest.mark.parametrize(
    ("path", "fmt", "expected"),
    [
        pytest.param("$.data.deployment.deploymentURIsLocal[0]", "", "https://keptn.sh"),
        pytest.param("$.data.deployment.deploymentstrategy", "", "user_managed"),
        pytest.param("$.data.test.teststrategy", "string", "health"),
        pytest.param(
            "$.data.deployment.deploymentURIsLocal",
            "yaml",
            "- https://keptn.sh\n- https://keptn2.sh\n",
            id="yaml-list",
        ),
        pytest.param("$.data.test", "yaml", "teststrategy: health\n", id="yaml-map"),
        pytest.param("$.data.test.teststrategy", "yaml", "health\n", id="yaml-scalar"),
        pytest.param("$.data.test", "", '{"teststrategy":"health"}', id="a-map-is-json"),
        pytest.param("$.data.test", "string", '{"teststrategy":"health"}', id="even-as-string"),
        pytest.param(
            "$.data.deployment.deploymentURIsLocal",
            "json",
            '["https://keptn.sh","https://keptn2.sh"]',
            id="json-list",
        ),
        pytest.param(
            "$.data.deployment.deploymentURIsLocal",
            "",
            "[https://keptn.sh https://keptn2.sh]",
            id="go-list",
        ),
        pytest.param(
            "$.data.html",
            "json",
            "\"\\u003ca href='x'\\u003e\\u0026\\u003c/a\\u003e\"",
            id="go-html-escaping",
        ),
        pytest.param("$.data.html", "", "<a href='x'>&</a>", id="plain-no-escaping"),
        pytest.param("$.data.count", "", "4711", id="int"),
        pytest.param("$.data.big", "", "1000000", id="big-int"),
        pytest.param("$.data.ratio", "", "0.25", id="float"),
        pytest.param("$.data.nothing", "", "<nil>", id="null"),
        pytest.param("$.data.flag", "", "true", id="bool"),
        pytest.param("$.data.nested", "", "[map[a:x b:1] [1 2]]", id="go-nested"),
        pytest.param("$.data.nested", "JSON", '[{"a":"x","b":1},[1,2]]', id="case-insensitive"),
    ],
)
def test_event_values_are_formatted_like_jes(path: str, fmt: str, expected: str) -> None:
    assert _value(path, fmt) == expected


def test_the_whole_event_as_json_is_compact_and_sorted() -> None:
    text = _value("$", "json")
    assert text.startswith('{"data":{"big":1000000,"count":4711,')
    assert ", " not in text
    assert '": ' not in text


def test_a_missing_key_is_an_error_in_jes_words() -> None:
    with pytest.raises(envs.EnvError) as caught:
        _value("$.data.deployment.undeploymentstrategy")
    assert str(caught.value) == (
        "could not add env with name V, valueFrom event: unknown key undeploymentstrategy"
    )


def test_secret_entries_reference_every_key_by_name() -> None:
    env = config.EnvVar.model_validate({"name": "locust-secret", "valueFrom": "secret"})
    assert envs.secret_entries(env, ["HOST", "FILE"]) == [
        {"name": "FILE", "valueFrom": {"secretKeyRef": {"name": "locust-secret", "key": "FILE"}}},
        {"name": "HOST", "valueFrom": {"secretKeyRef": {"name": "locust-secret", "key": "HOST"}}},
    ]


def test_keptn_variables_and_labels_are_always_added() -> None:
    scope = cloudevents.Scope(
        project="sockshop",
        stage="dev",
        service="carts",
        labels={"build-id": "17", "jsonPathLabel": "x", "app version": "1.0", "n": 3},
    )
    assert envs.keptn_entries(scope) == [
        {"name": "KEPTN_PROJECT", "value": "sockshop"},
        {"name": "KEPTN_STAGE", "value": "dev"},
        {"name": "KEPTN_SERVICE", "value": "carts"},
        {"name": "LABELS_APP_VERSION", "value": "1.0"},
        {"name": "LABELS_BUILD_ID", "value": "17"},
        {"name": "LABELS_JSONPATHLABEL", "value": "x"},
        {"name": "LABELS_N", "value": "3"},
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            {"b": 1, "a": {"d": [1, "x"], "c": None}}, "a:\n  c: null\n  d:\n  - 1\n  - x\nb: 1\n"
        ),
        pytest.param("line one\nline two", "|-\n  line one\n  line two\n", id="multiline"),
        pytest.param(None, "null\n"),
        pytest.param([], "[]\n"),
    ],
)
def test_yaml_output(value: Any, expected: str) -> None:
    assert envs.as_yaml(value) == expected
