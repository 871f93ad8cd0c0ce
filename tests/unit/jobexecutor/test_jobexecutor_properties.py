"""Properties over arbitrary configurations, events and values: never a crash, always a clear
error, and formatting that round-trips.
"""

from __future__ import annotations

import fnmatch
import json
import re
import string
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from klt_task_runner.jobexecutor import cloudevents, config, envs, images, jobspec, matching


def _error_of(call: Callable[[], object], expected: type[Exception]) -> str | None:
    """None when ``call`` returns; the message when it raises ``expected`` (anything else
    propagates and fails the property)."""
    try:
        call()
    except expected as exc:
        return str(exc)
    return None


PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

TASK_KEYS = [
    "name", "image", "imagePullPolicy", "cmd", "args", "env", "files", "workingDir",
    "resources", "maxPollDuration", "namespace", "ttlSecondsAfterFinished",
    "securityContext", "serviceAccount", "annotations", "bogus",
]  # fmt: skip
ENV_KEYS = ["name", "value", "valueFrom", "as", "extra"]
EVENT_KEYS = ["name", "jsonpath", "other"]
ACTION_KEYS = ["name", "silent", "events", "tasks", "unsupportedTag"]


def _near(keys: list[str], special: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Mappings with (mostly) schema keys whose values are sometimes right, sometimes not."""
    values = {k: st.one_of(special.get(k, json_values), json_values) for k in keys}
    return st.one_of(
        st.fixed_dictionaries({}, optional=values),
        json_values,
    )


env_like = _near(
    ENV_KEYS,
    {
        "valueFrom": st.sampled_from(["event", "secret", "string", "file", ""]),
        "as": st.sampled_from(["json", "YAML", "string", "xml"]),
        "value": st.sampled_from(["$", "$.data.x", "$.data[", "lit"]),
    },
)
task_like = _near(
    TASK_KEYS,
    {
        "cmd": st.lists(st.text(max_size=5), max_size=3),
        "env": st.lists(env_like, max_size=3),
        "files": st.lists(st.text(max_size=10), max_size=3),
        "resources": _near(["limits", "requests"], {}),
        "securityContext": _near(["runAsUser", "privileged", "capabilities"], {}),
        "maxPollDuration": st.integers(-5, 5000),
    },
)
action_like = _near(
    ACTION_KEYS,
    {
        "events": st.lists(_near(EVENT_KEYS, {"jsonpath": _near(["property", "match"], {})})),
        "tasks": st.lists(task_like, max_size=3),
        "silent": st.booleans(),
    },
)
documents = st.one_of(
    st.fixed_dictionaries(
        {"apiVersion": st.sampled_from(["v2", "v2", "v1", 2, None])},
        optional={"actions": st.one_of(st.lists(action_like, max_size=3), json_values)},
    ),
    json_values,
)


@PROPERTIES
@given(documents)
def test_any_document_parses_or_fails_with_a_config_error(document: Any) -> None:
    text = yaml.safe_dump(document)
    try:
        cfg = config.parse(text)
    except config.ConfigError as exc:
        message = str(exc)
        assert message.strip()
        assert "Traceback" not in message
        # Every schema problem points at a place: a key or an index.
        if "unknown field" in message:
            assert re.search(r"[\w\]]: unknown field", message)
    else:
        assert cfg.api_version == "v2"


@PROPERTIES
@given(st.text(max_size=300))
def test_any_text_parses_or_fails_with_a_config_error(text: str) -> None:
    message = _error_of(lambda: config.parse(text), config.ConfigError)
    assert message is None or message.strip()


@PROPERTIES
@given(
    event_type=st.one_of(
        st.sampled_from(["sh.keptn.event.test.triggered", "sh.keptn.event.x.finished"]),
        st.text(max_size=30),
    ),
    data=json_values,
    names=st.lists(st.text(max_size=12), max_size=4),
    paths=st.lists(st.text(max_size=15), max_size=3),
)
def test_matching_never_crashes(
    event_type: str, data: Any, names: list[str], paths: list[str]
) -> None:
    entries = [config.EventFilter(name=n) for n in names] + [
        config.EventFilter(name="", jsonpath=config.JsonPathFilter(property_=p, match="x"))
        for p in paths
    ]
    cfg = config.JobConfig(api_version="v2", actions=[config.Action(events=entries)])
    event = cloudevents.KeptnEvent(
        type=event_type, id="i", source="s", specversion="1.0", data=data
    )
    result = matching.matching_actions(cfg, event)
    assert len(result) <= 1
    message = _error_of(lambda: cloudevents.scope_of(event), cloudevents.EventFormatError)
    assert message is None or message


@PROPERTIES
@given(st.text(max_size=25), json_values)
def test_resolving_any_path_returns_or_raises_a_path_error(path: str, document: Any) -> None:
    message = _error_of(lambda: matching.resolve(path, document), matching.PathError)
    assert message is None or message


@PROPERTIES
@given(json_values, st.sampled_from(["", "json", "yaml", "string"]))
def test_every_value_formats_to_text(value: Any, fmt: config.EnvFormat) -> None:
    assert isinstance(envs.format_event_value(value, fmt), str)


@PROPERTIES
@given(json_values)
def test_json_output_round_trips_despite_go_escaping(value: Any) -> None:
    assume(not any(isinstance(v, float) for v in _leaves(value)))  # 1.0 vs 1 is JSON's business
    assert json.loads(envs.as_json(value)) == value


# PyYAML writes some Unicode line breaks (NEL, U+2028) raw and then reads them as breaks; Go's
# encoder escapes them. Event values with such characters are not worth a custom emitter.
plain_text = st.text(
    st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), include_characters="\n"
    ),
    max_size=20,
)
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), plain_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(plain_text, inner, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTIES
@given(yaml_values)
def test_yaml_output_round_trips(value: Any) -> None:
    text = envs.as_yaml(value)
    assert text.endswith("\n")
    assert yaml.safe_load(text) == value


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


glob_alphabet = st.text(alphabet="ab/:.*?", min_size=1, max_size=8)
image_alphabet = st.text(alphabet="ab/:.", max_size=8)


@PROPERTIES
@given(glob_alphabet, image_alphabet)
def test_simple_globs_agree_with_fnmatch_across_separators(glob: str, image: str) -> None:
    assume(glob != "*")
    assert images.AllowList.compile([glob]).allows(image) is fnmatch.fnmatchcase(image, glob)


@PROPERTIES
@given(st.text(max_size=20))
def test_any_glob_compiles_or_is_refused_clearly(glob: str) -> None:
    message = _error_of(
        lambda: images.AllowList.compile([glob]).allows("docker.io/library/alpine:3"), ValueError
    )
    assert message is None or "glob" in message


LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@PROPERTIES
@given(st.text(max_size=100))
def test_sanitised_label_values_are_always_valid(text: str) -> None:
    value = jobspec.label_value(text)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value)


@PROPERTIES
@given(st.text(max_size=60), st.integers(0, 999), st.integers(0, 998))
def test_job_names_are_always_valid_dns_labels(event_id: str, action: int, task: int) -> None:
    name = jobspec.job_name(event_id, action, task)
    assert len(name) <= 63
    assert DNS_LABEL.match(name)
    assert DNS_LABEL.match(jobspec.files_configmap_name(name))


@PROPERTIES
@given(st.lists(st.text(alphabet=string.ascii_lowercase + "/_.-", min_size=1, max_size=12)))
def test_file_selection_either_maps_to_clean_paths_or_says_why(entries: list[str]) -> None:
    available = {"a__b": "", "a__c__d": "", "x": "", "y____z": ""}
    task = config.Task(name="t", files=entries)
    selected: list[tuple[str, str]] = []
    message = _error_of(
        lambda: selected.extend(jobspec.select_files(task, available)), jobspec.SpecError
    )
    assert message is None or "task t" in message
    for path, key in selected:
        assert key in available
        assert all(part not in ("", ".", "..") for part in path.split("/"))
