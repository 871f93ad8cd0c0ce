"""The job configuration parser: JES's schema, strict like ``yaml.UnmarshalStrict``, and every
error naming the path of what is wrong.

Aspects: the documented samples parse with their defaults; unknown keys, duplicate keys and
wrong types fail with a path; apiVersion rules; Go-like scalars (``value: 8080`` is a string,
null means absent); the checks JES only made at job creation (valueFrom, as, quantities).
"""

from __future__ import annotations

import textwrap

import pytest

from klt_task_runner.jobexecutor import config

SIMPLE = """
apiVersion: v2
actions:
  - name: "Run locust"
    events:
      - name: "sh.keptn.event.test.triggered"
        jsonpath:
          property: "$.data.test.teststrategy"
          match: "health"
    tasks:
      - name: "Run locust smoke tests"
        files:
          - locust/basic.py
          - locust/locust.conf
        image: "locustio/locust"
        cmd: ["locust"]
        args: ["--config", "/keptn/locust/locust.conf", "--host", "$(HOST)"]
        env:
          - name: HOST
            value: "$.data.deployment.deploymentURIsLocal[0]"
            valueFrom: event
"""

COMPLEX = """
apiVersion: v2
actions:
  - name: "Run locust"
    silent: true
    events:
      - name: "sh.keptn.event.action.triggered"
      - name: "sh.keptn.event.*.triggered"
    tasks:
      - name: "Greet"
        image: "alpine"
        imagePullPolicy: IfNotPresent
        workingDir: /bin
        cmd: [sh]
        args: ["-c", "echo hello"]
        resources:
          limits: {cpu: 1, memory: 512Mi}
          requests: {cpu: 50m, memory: 128Mi}
        maxPollDuration: 1000
        namespace: keptn2
        ttlSecondsAfterFinished: 600
        serviceAccount: tester
        annotations:
          vault.io/inject: "true"
          count: 3
        securityContext:
          runAsUser: 7000
          runAsGroup: 9000
          readOnlyRootFilesystem: false
          capabilities: {add: [NET_ADMIN], drop: [ALL]}
          seccompProfile: {type: Localhost, localhostProfile: p.json}
        env:
          - {name: DATA_DIR, value: /tmp/data, valueFrom: string}
          - {name: locust-secret, valueFrom: secret}
          - {name: EVENT, value: "$", valueFrom: event, as: JSON}
"""


def _parse(text: str) -> config.JobConfig:
    return config.parse(textwrap.dedent(text))


def _error(text: str) -> str:
    with pytest.raises(config.ConfigError) as caught:
        _parse(text)
    return str(caught.value)


def test_the_documented_simple_config_parses_with_jes_defaults() -> None:
    cfg = _parse(SIMPLE)
    [action] = cfg.actions
    assert action.name == "Run locust"
    assert action.silent is False
    [event] = action.events
    assert event.jsonpath is not None
    assert (event.jsonpath.property_, event.jsonpath.match) == (
        "$.data.test.teststrategy",
        "health",
    )
    [task] = action.tasks
    assert task.cmd == ["locust"]
    assert task.args[-1] == "$(HOST)"
    assert task.files == ["locust/basic.py", "locust/locust.conf"]
    assert task.resources is None
    assert task.max_poll_duration is None
    assert task.ttl_seconds_after_finished is None
    assert task.security_context is None
    assert task.image_pull_policy == ""
    [env] = task.env
    assert (env.source, env.format) == ("event", "")


def test_every_task_field_of_a_complex_config_is_read() -> None:
    [action] = _parse(COMPLEX).actions
    assert action.silent is True
    assert [e.name for e in action.events] == [
        "sh.keptn.event.action.triggered",
        "sh.keptn.event.*.triggered",
    ]
    [task] = action.tasks
    assert task.image_pull_policy == "IfNotPresent"
    assert task.working_dir == "/bin"
    assert task.resources is not None
    assert task.resources.limits is not None
    assert task.resources.requests is not None
    assert (task.resources.limits.cpu, task.resources.limits.memory) == ("1", "512Mi")
    assert (task.resources.requests.cpu, task.resources.requests.memory) == ("50m", "128Mi")
    assert task.max_poll_duration == 1000
    assert task.namespace == "keptn2"
    assert task.ttl_seconds_after_finished == 600
    assert task.service_account == "tester"
    assert task.annotations == {"vault.io/inject": "true", "count": "3"}
    context = task.security_context
    assert context is not None
    assert (context.run_as_user, context.run_as_group) == (7000, 9000)
    assert context.read_only_root_filesystem is False
    assert context.capabilities == config.Capabilities(add=["NET_ADMIN"], drop=["ALL"])
    assert context.seccomp_profile == config.SeccompProfile(
        type="Localhost", localhost_profile="p.json"
    )
    assert [(e.name, e.source, e.format) for e in task.env] == [
        ("DATA_DIR", "string", ""),
        ("locust-secret", "secret", ""),
        ("EVENT", "event", "json"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("apiVersion: v2\nfoo: bar\n", "foo: unknown field", id="top-level-key"),
        pytest.param(
            "apiVersion: v2\nactions:\n  - name: a\n    unsupportedTag: x\n",
            "actions[0].unsupportedTag: unknown field",
            id="action-key",
        ),
        pytest.param(
            "apiVersion: v2\nactions:\n  - tasks:\n      - name: t\n        cmd: ls -la\n",
            "actions[0].tasks[0].cmd: Input should be a valid list",
            id="string-for-list",
        ),
        pytest.param(
            "apiVersion: v2\nactions: {}\n", "actions: Input should be a valid list", id="map"
        ),
        pytest.param(
            "apiVersion: v2\nactions:\n  - tasks:\n      - securityContext: {runAsUser: root}\n",
            "actions[0].tasks[0].securityContext.runAsUser: Input should be a valid integer",
            id="not-an-int",
        ),
        pytest.param(
            "apiVersion: v2\nactions:\n  - tasks:\n      - resources: {limits: {gpu: 1}}\n",
            "actions[0].tasks[0].resources.limits.gpu: unknown field",
            id="unknown-resource",
        ),
        pytest.param(
            "apiVersion: v2\nactions:\n  - events:\n      - name: x\n        jsonpath: {path: y}\n",
            "actions[0].events[0].jsonpath.path: unknown field",
            id="jsonpath-key",
        ),
        pytest.param(
            "apiVersion: v2\nactions:\n  - tasks:\n      - run_as_user: 1\n",
            "actions[0].tasks[0].run_as_user: unknown field",
            id="python-name-is-not-an-alias",
        ),
    ],
)
def test_strict_parsing_names_the_path_of_the_problem(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_several_errors_are_reported_together_and_bounded() -> None:
    tasks = "".join(f"      - bogus{n}: 1\n" for n in range(8))
    message = _error(f"apiVersion: v2\nactions:\n  - tasks:\n{tasks}")
    assert message.count("unknown field") == 5
    assert message.endswith("and 3 more")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("actions: []\n", "apiVersion must be specified", id="missing"),
        pytest.param("", "apiVersion must be specified", id="empty-document"),
        pytest.param("apiVersion: v1\n", "apiVersion v1 is not supported, use v2", id="v1"),
        pytest.param("apiVersion: 2\n", "apiVersion 2 is not supported, use v2", id="number"),
        pytest.param("- a\n- b\n", "must be a mapping, not a list", id="list"),
        pytest.param("just text\n", "must be a mapping, not a string", id="scalar"),
    ],
)
def test_api_version_and_document_shape(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_a_duplicate_key_is_an_error_with_its_position() -> None:
    message = _error("apiVersion: v2\nactions: []\nactions: []\n")
    assert "duplicate key 'actions'" in message
    assert "line 3" in message


def test_malformed_yaml_says_where() -> None:
    message = _error("apiVersion: v2\nactions: [\n")
    assert message.startswith("invalid YAML:")
    assert "line" in message


def test_scalars_keep_their_text_like_gos_decoder() -> None:
    [action] = _parse(
        """
        apiVersion: v2
        actions:
          - name: 2024-01-01
            events:
              - name: yes
                jsonpath: {property: "$.data.n", match: 4711}
            tasks:
              - name: 1.10
                image: alpine
                env:
                  - {name: PORT, value: 8080, valueFrom: string}
                  - {name: FLAG, value: true, valueFrom: string}
        """
    ).actions
    assert action.name == "2024-01-01"
    assert action.events[0].name == "yes"
    assert action.events[0].jsonpath is not None
    assert action.events[0].jsonpath.match == "4711"
    assert action.tasks[0].name == "1.10"
    assert [e.value for e in action.tasks[0].env] == ["8080", "true"]


def test_null_means_absent_so_defaults_apply() -> None:
    [action] = _parse(
        """
        apiVersion: v2
        actions:
          - name: a
            silent: ~
            events:
            tasks:
              - name: t
                resources:
                cmd: null
        """
    ).actions
    assert action.silent is False
    assert action.events == []
    assert action.tasks[0].resources is None  # null keeps the defaults, like an absent block
    assert action.tasks[0].cmd == []


def test_an_empty_resources_block_is_present_and_drops_the_defaults() -> None:
    [action] = _parse(
        "apiVersion: v2\nactions:\n  - tasks:\n      - name: t\n        resources: {}\n"
    ).actions
    assert action.tasks[0].resources == config.Resources()


def test_merge_keys_work_as_in_go_yaml() -> None:
    [action] = _parse(
        """
        apiVersion: v2
        actions:
          - name: a
            tasks:
              - &base {name: one, image: alpine, cmd: [true]}
              - <<: *base
                name: two
        """
    ).actions
    assert [(t.name, t.image, t.cmd) for t in action.tasks] == [
        ("one", "alpine", ["true"]),
        ("two", "alpine", ["true"]),
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            "{name: X}",
            "actions[0].tasks[0].env[0]: could not add env with name X, unknown valueFrom ''",
            id="missing-valueFrom",
        ),
        pytest.param(
            "{name: X, valueFrom: configmap}",
            "could not add env with name X, unknown valueFrom 'configmap'",
            id="unknown-valueFrom",
        ),
        pytest.param(
            "{name: X, valueFrom: event, value: $, as: xml}",
            "env X: unknown format as: 'xml'",
            id="unknown-as",
        ),
    ],
)
def test_env_sources_and_formats_are_checked_when_parsing(env: str, expected: str) -> None:
    message = _error(f"apiVersion: v2\nactions:\n  - tasks:\n      - env: [{env}]\n")
    assert expected in message


def test_resource_values_must_be_quantities() -> None:
    message = _error(
        "apiVersion: v2\nactions:\n  - tasks:\n      - resources: {requests: {memory: lots}}\n"
    )
    assert "actions[0].tasks[0].resources.requests.memory" in message
    assert "not a Kubernetes quantity" in message


@pytest.mark.parametrize("value", ["1", "0.5", "500m", "128Mi", "1Gi", "1e3", "+2", ".5"])
def test_valid_quantities_pass(value: str) -> None:
    text = (
        f"apiVersion: v2\nactions:\n  - tasks:\n      - resources: {{limits: {{cpu: '{value}'}}}}\n"
    )
    [action] = _parse(text).actions
    assert action.tasks[0].resources is not None


def test_max_poll_duration_must_be_positive() -> None:
    message = _error("apiVersion: v2\nactions:\n  - tasks:\n      - maxPollDuration: 0\n")
    assert "actions[0].tasks[0].maxPollDuration" in message


def test_names_image_and_cmd_may_be_empty_and_events_may_be_null_as_in_jes() -> None:
    [action] = _parse("apiVersion: v2\nactions:\n  - events: ~\n    tasks: [{}]\n").actions
    assert action.events == []
    assert (action.tasks[0].name, action.tasks[0].image, action.tasks[0].cmd) == ("", "", [])


def test_the_config_hash_is_sha3_224_of_the_text() -> None:
    digest = config.config_hash("apiVersion: v2\n")
    assert len(digest) == 56
    assert digest == config.config_hash("apiVersion: v2\n")
    assert digest != config.config_hash("apiVersion: v2\n\n")
