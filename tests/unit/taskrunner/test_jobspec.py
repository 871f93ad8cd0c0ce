"""Keptn's rules for a task's Job, checked without a cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from klt_common.structs.api import lifecycle
from klt_task_runner import jobspec

IMAGES = jobspec.Images(deno="ghcr.io/klt-dev/deno-runtime:v0.1.0", python="x/python-runtime:1")


def _definition(name: str, namespace: str = "apps", **spec: Any) -> lifecycle.KeptnTaskDefinition:
    return lifecycle.KeptnTaskDefinition.model_validate(
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnTaskDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def _task(definition: str = "hello", **spec: Any) -> lifecycle.KeptnTask:
    return lifecycle.KeptnTask.model_validate(
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnTask",
            "metadata": {
                "name": "pre-hello-12345",
                "namespace": "apps",
                "uid": "0b5c6a3e-1111-2222-3333-444455556666",
                "labels": {"team": "a"},
                "annotations": {"note": "x"},
            },
            "spec": {
                "taskDefinition": definition,
                "context": {
                    "appName": "shop",
                    "appVersion": "",
                    "workloadName": "shop-cart",
                    "workloadVersion": "2.1.0",
                    "taskType": "pre",
                    "objectType": "Workload",
                },
                **spec,
            },
        }
    )


def _env(plan: jobspec.JobPlan) -> dict[str, Any]:
    container = plan.job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _nothing(_: str) -> lifecycle.KeptnTaskDefinition | None:
    return None


def test_keptn_context_keeps_keptns_key_order_and_omits_empty_metadata() -> None:
    assert jobspec.keptn_context(_task()) == (
        '{"workloadName":"shop-cart","appName":"shop","appVersion":"","workloadVersion":"2.1.0",'
        '"taskType":"pre","objectType":"Workload"}'
    )
    bare = lifecycle.KeptnTask.model_validate(
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnTask",
            "spec": {"taskDefinition": "x"},
        }
    )
    assert json.loads(jobspec.keptn_context(bare)) == {
        "workloadName": "",
        "appName": "",
        "appVersion": "",
        "workloadVersion": "",
        "taskType": "",
        "objectType": "",
    }


def test_json_is_written_the_way_go_writes_it() -> None:
    assert (
        jobspec.go_json({"a": "<b> & c", "z": "é"}) == '{"a":"\\u003cb\\u003e \\u0026 c","z":"é"}'
    )


def test_inline_deno_code_is_mounted_from_the_definitions_config_map() -> None:
    definition = _definition(
        "hello",
        deno={
            "inline": {"code": "console.log(1)"},
            "parameters": {"map": {"b": "2", "a": "1"}},
            "secureParameters": {"secret": "token"},
        },
    )
    plan = jobspec.plan_job(_task(), definition, _nothing, IMAGES)
    env = _env(plan)
    pod = plan.job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert list(env) == ["DATA", "KEPTN_CONTEXT", "CMD_ARGS", "SECURE_DATA", "SCRIPT"]
    assert env["DATA"] == '{"a":"1","b":"2"}'
    assert env["CMD_ARGS"] == ""
    assert env["SECURE_DATA"] == {"secretKeyRef": {"name": "token", "key": "SECURE_DATA"}}
    assert env["SCRIPT"] == "/var/data/function.ts"
    assert container["name"] == "keptn-function-runner"
    assert container["image"] == IMAGES.deno
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["volumeMounts"] == [
        {
            "name": "function-mount",
            "readOnly": True,
            "mountPath": "/var/data/function.ts",
            "subPath": "code",
        }
    ]
    assert pod["volumes"] == [{"name": "function-mount", "configMap": {"name": "keptnfn-hello"}}]
    assert plan.inline_config_map
    assert plan.code_copy is None
    assert plan.secret == "token"


def test_the_config_map_name_of_inline_code_is_cut_like_keptns() -> None:
    assert jobspec.function_configmap_name("x" * 300) == "keptnfn-" + "x" * 245


def test_http_ref_python_code_is_passed_as_the_script_url_without_data() -> None:
    definition = _definition("hello", python={"httpRef": {"url": "https://e.com/a.py"}})
    plan = jobspec.plan_job(_task(), definition, _nothing, IMAGES)
    env = _env(plan)
    assert "DATA" not in env
    assert env["SCRIPT"] == "https://e.com/a.py"
    assert plan.job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGES.python
    assert "volumes" not in plan.job["spec"]["template"]["spec"]


def test_a_config_map_wins_over_an_http_ref() -> None:
    definition = _definition(
        "hello", deno={"configMapRef": {"name": "code"}, "httpRef": {"url": "https://e.com/a.ts"}}
    )
    env = _env(jobspec.plan_job(_task(), definition, _nothing, IMAGES))
    assert env["SCRIPT"] == "/var/data/function.ts"


def test_parameters_merge_task_over_definition_over_function_ref_parent() -> None:
    parent = _definition(
        "parent",
        python={
            "inline": {"code": "print(1)"},
            "parameters": {"map": {"a": "parent", "b": "parent", "c": "parent"}},
            "secureParameters": {"secret": "parent-secret"},
            "cmdParameters": "-u",
        },
    )
    child = _definition(
        "child",
        deno={
            "functionRef": {"name": "parent"},
            "parameters": {"map": {"b": "child", "c": "child"}},
            "secureParameters": {"secret": "child-secret"},
        },
    )
    task = _task("child", parameters={"map": {"c": "task"}})
    plan = jobspec.plan_job(task, child, {"parent": parent}.get, IMAGES)
    env = _env(plan)
    assert json.loads(env["DATA"]) == {"a": "parent", "b": "child", "c": "task"}
    assert env["SECURE_DATA"]["secretKeyRef"]["name"] == "child-secret"
    assert env["CMD_ARGS"] == "-u"
    # The parent's code, runtime image and mount path are used.
    assert env["SCRIPT"] == "/var/data/function.py"
    assert plan.job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGES.python
    assert plan.job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == (
        "keptnfn-parent"
    )


def test_the_tasks_secret_beats_the_definitions() -> None:
    definition = _definition(
        "hello", deno={"inline": {"code": "1"}, "secureParameters": {"secret": "def"}}
    )
    task = _task(secureParameters={"secret": "mine"})
    assert _env(jobspec.plan_job(task, definition, _nothing, IMAGES))["SECURE_DATA"] == {
        "secretKeyRef": {"name": "mine", "key": "SECURE_DATA"}
    }


def test_a_missing_function_ref_parent_is_not_found_and_a_cycle_is_invalid() -> None:
    child = _definition("child", deno={"functionRef": {"name": "parent"}})
    with pytest.raises(jobspec.DefinitionNotFound) as missing:
        jobspec.plan_job(_task("child"), child, _nothing, IMAGES)
    assert missing.value.name == "parent"
    loop = _definition("loop", deno={"functionRef": {"name": "loop"}})
    with pytest.raises(jobspec.DefinitionError, match="does not end in code"):
        jobspec.plan_job(_task("loop"), loop, {"loop": loop}.get, IMAGES)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "Either Container, Python, or Deno field must be defined"),
        (
            {"deno": {"inline": {"code": "1"}}, "python": {"inline": {"code": "1"}}},
            "Only one of Container, Python, or Deno field can be defined",
        ),
        ({"deno": {"parameters": {"map": {"a": "b"}}}}, "has no code"),
    ],
    ids=["no-runtime", "two-runtimes", "no-code"],
)
def test_unusable_definitions_are_rejected_with_a_reason(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(jobspec.DefinitionError, match=message) as invalid:
        jobspec.plan_job(_task(), _definition("hello", **spec), _nothing, IMAGES)
    assert invalid.value.reason == "InvalidTaskDefinition"


def test_code_of_a_definition_in_another_namespace_is_copied_next_to_the_task() -> None:
    shared = _definition("hello", namespace="klt-system", deno={"inline": {"code": "c()"}})
    plan = jobspec.plan_job(_task(), shared, _nothing, IMAGES)
    job_name = plan.job["metadata"]["name"]
    assert plan.code_copy == jobspec.CodeCopy(
        name=job_name, inline="c()", source_namespace="klt-system"
    )
    assert plan.job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == job_name
    referenced = _definition("hello", namespace="klt-system", deno={"configMapRef": {"name": "cm"}})
    copy = jobspec.plan_job(_task(), referenced, _nothing, IMAGES).code_copy
    assert copy is not None
    assert (copy.source_namespace, copy.source_config_map, copy.inline) == (
        "klt-system",
        "cm",
        None,
    )


def test_a_container_is_used_as_written_plus_keptn_context_and_a_scratch_volume() -> None:
    definition = _definition(
        "box",
        container={
            "name": "testy",
            "image": "busybox:1.36",
            "env": [{"name": "KEPTN_CONTEXT", "value": "user value"}, {"name": "A", "value": "1"}],
            "resources": {"limits": {"memory": "64Mi"}},
            "volumeMounts": [{"name": "scratch", "mountPath": "/cache"}],
        },
        retries=3,
        timeout="2m",
    )
    plan = jobspec.plan_job(_task("box"), definition, _nothing, IMAGES)
    pod = plan.job["spec"]["template"]["spec"]
    assert pod["containers"][0]["name"] == "testy"
    env = _env(plan)
    assert env["A"] == "1"
    assert env["KEPTN_CONTEXT"].startswith('{"workloadName":"shop-cart"')
    assert pod["volumes"] == [
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
    ]
    assert "DATA" not in env


def test_job_settings_come_from_the_task_and_the_definition() -> None:
    definition = _definition(
        "hello",
        container={"name": "c", "image": "busybox"},
        ttlSecondsAfterFinished=60,
        serviceAccount={"name": "sa"},
        automountServiceAccountToken={"type": False},
        imagePullSecrets=[{"name": "regcred"}],
    )
    task = _task(retries=2, timeout="1m30s")
    job = jobspec.plan_job(task, definition, _nothing, IMAGES).job
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (
        spec["backoffLimit"],
        spec["activeDeadlineSeconds"],
        spec["ttlSecondsAfterFinished"],
    ) == (
        2,
        90,
        60,
    )
    assert pod["restartPolicy"] == "OnFailure"
    assert pod["serviceAccountName"] == "sa"
    assert pod["automountServiceAccountToken"] is False
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert job["metadata"]["labels"] == {
        "team": "a",
        jobspec.LABEL_TASK_UID: "0b5c6a3e-1111-2222-3333-444455556666",
    }
    assert job["spec"]["template"]["metadata"]["annotations"] == {"note": "x"}
    assert job["metadata"]["annotations"] == {
        "note": "x",
        "keptn.sh/app": "shop",
        "keptn.sh/workload": "shop-cart",
        "keptn.sh/version": "2.1.0",
        "keptn.sh/task-name": "pre-hello-12345",
    }


def test_defaults_and_a_zero_timeout() -> None:
    definition = _definition("hello", container={"name": "c", "image": "busybox"})
    job = jobspec.plan_job(_task(timeout="0"), definition, _nothing, IMAGES).job
    assert job["spec"]["backoffLimit"] == 10
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    assert "activeDeadlineSeconds" not in job["spec"]
    default = jobspec.plan_job(_task(), definition, _nothing, IMAGES).job
    assert default["spec"]["activeDeadlineSeconds"] == 300


@pytest.mark.parametrize(
    "name", ["pre-hello-12345", "Post.Check_" + "x" * 300, "-odd-", "a.b.c"], ids=str.__len__
)
def test_job_names_are_deterministic_dns_labels(name: str) -> None:
    first = jobspec.job_name(name, "uid-1")
    assert first == jobspec.job_name(name, "uid-1")
    assert first != jobspec.job_name(name, "uid-2")
    assert len(first) <= 63
    assert first[0].isalnum()
    assert first[-1].isalnum()
    assert set(first) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
