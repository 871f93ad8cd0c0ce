"""What a task becomes in Kubernetes: names, labels, resources, security contexts, files, and
the Job body, plus the image allow-list and the settings that feed them.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from klt_task_runner.jobexecutor import config, images, jobspec
from klt_task_runner.jobexecutor.settings import JobExecutorSettings, ResourceDefaults

SETTINGS = JobExecutorSettings()
EVENT_ID = "f2b878d3-03c0-4e8f-bc3f-454bc1b3d79b"


def _task(**fields: Any) -> config.Task:
    return config.Task.model_validate(fields, by_alias=True)


def _ref(**overrides: Any) -> jobspec.TaskRef:
    values: dict[str, Any] = {
        "event_id": EVENT_ID,
        "keptn_context": "08735340-6f9e-4b32-97ff-3b6c292bc50b",
        "git_commit_id": "",
        "action_index": 0,
        "action_name": "Run locust",
        "task_index": 0,
        "task_name": "Run locust tests",
        "config_hash": "0" * 56,
    }
    values.update(overrides)
    return jobspec.TaskRef(**values)


# -- names and labels -------------------------------------------------------------------------


def test_job_names_follow_jes() -> None:
    assert jobspec.job_name(EVENT_ID, 0, 0) == (
        "job-executor-service-job-f2b878d3-03c0-4e8f-bc3f--000-001"
    )
    assert jobspec.job_name(EVENT_ID, 2, 1).endswith("-002-002")
    assert len(jobspec.job_name(EVENT_ID, 999, 998)) <= 63


@pytest.mark.parametrize("event_id", ["ABC_def.1", "-leading", "a b", "ü" * 30, ""])
def test_odd_event_ids_still_give_valid_distinct_names(event_id: str) -> None:
    name = jobspec.job_name(event_id, 0, 0)
    assert len(name) <= 63
    assert all(c.islower() or c.isdigit() or c == "-" for c in name)
    assert name != jobspec.job_name(event_id + "x", 0, 0) or len(event_id) >= 24


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Some fancy action name ...", "Some_fancy_action_name"),
        (
            "--NameThat's not Compatible with k8s []{}///// a....",
            "NameThat_s_not_Compatible_with_k8s_a",
        ),
        ("x" * 80, "x" * 63),
        ("ok-name_1.2", "ok-name_1.2"),
    ],
)
def test_label_values_are_sanitised_like_jes(text: str, expected: str) -> None:
    assert jobspec.label_value(text) == expected


def test_job_labels() -> None:
    settings = JobExecutorSettings(job_labels={"team": "qa", "keptn.sh/event-id": "spoofed"})
    labels = jobspec.job_labels(
        _ref(git_commit_id="c0ffee", action_index=1, task_index=2), settings
    )
    assert labels == {
        "team": "qa",
        "app.kubernetes.io/managed-by": "klt-job-executor",
        "keptn.sh/context": "08735340-6f9e-4b32-97ff-3b6c292bc50b",
        "keptn.sh/event-id": EVENT_ID,
        "keptn.sh/commitid": "c0ffee",
        "keptn.sh/jes-action": "Run_locust",
        "keptn.sh/jes-task": "Run_locust_tests",
        "keptn.sh/jes-job-confighash": "0" * 56,
        "keptn.sh/jes-action-index": "1",
        "keptn.sh/jes-task-index": "2",
    }
    assert "keptn.sh/commitid" not in jobspec.job_labels(_ref(), SETTINGS)


def test_a_job_belongs_to_the_event_whose_labels_it_carries() -> None:
    body = jobspec.job(
        _ref(), _task(name="t", image="alpine"), namespace="n", env=[], files=[], settings=SETTINGS
    )
    assert jobspec.belongs_to(body, _ref())
    assert not jobspec.belongs_to(body, _ref(event_id=EVENT_ID[:24] + "-other"))
    assert not jobspec.belongs_to(body, _ref(keptn_context="another"))


# -- resources and security ---------------------------------------------------------------------


def test_defaults_apply_without_a_resources_block() -> None:
    assert jobspec.resources(_task(), SETTINGS) == {
        "limits": {"cpu": "1", "memory": "512Mi"},
        "requests": {"cpu": "50m", "memory": "128Mi"},
    }


def test_a_resources_block_drops_every_default() -> None:
    partial = _task(resources={"limits": {"cpu": "1"}, "requests": {"cpu": "50m"}})
    assert jobspec.resources(partial, SETTINGS) == {
        "limits": {"cpu": "1"},
        "requests": {"cpu": "50m"},
    }
    assert jobspec.resources(_task(resources={}), SETTINGS) == {}


def test_empty_default_values_are_left_unset() -> None:
    settings = JobExecutorSettings(
        default_resources=ResourceDefaults(limits_cpu="", limits_memory="", requests_cpu="10m")
    )
    assert jobspec.resources(_task(), settings) == {"requests": {"cpu": "10m", "memory": "128Mi"}}


def test_the_default_security_context_is_jes_safe_one() -> None:
    merged = jobspec.security_context(_task(), SETTINGS).to_k8s()
    assert merged == {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 2000,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_a_task_context_overrides_field_by_field_and_replaces_nested_objects() -> None:
    task = _task(
        securityContext={
            "runAsUser": 7000,
            "readOnlyRootFilesystem": False,
            "capabilities": {"add": ["NET_ADMIN"]},
            "seccompProfile": {"type": "Unconfined"},
        }
    )
    merged = jobspec.security_context(task, SETTINGS).to_k8s()
    assert merged["runAsUser"] == 7000
    assert merged["runAsGroup"] == 2000  # kept from the default
    assert merged["readOnlyRootFilesystem"] is False
    assert merged["capabilities"] == {"add": ["NET_ADMIN"]}  # the default's drop is gone
    assert merged["seccompProfile"] == {"type": "Unconfined"}


def test_privileged_tasks_need_permission() -> None:
    task = _task(securityContext={"privileged": True})
    with pytest.raises(jobspec.SpecError, match="privileged containers are not allowed"):
        jobspec.security_context(task, SETTINGS)
    allowed = JobExecutorSettings(allow_privileged_jobs=True)
    assert jobspec.security_context(task, allowed).privileged is True


def test_settings_read_security_contexts_case_insensitively() -> None:
    settings = JobExecutorSettings.model_validate(
        {
            "default_security_context": {
                "RunAsUser": 5,
                "Capabilities": {"Drop": ["ALL"]},
                "SeccompProfile": {"Type": "RuntimeDefault"},
            },
            "default_pod_security_context": {"FSGroup": 7, "RunAsNonRoot": True},
        }
    )
    assert settings.default_security_context.run_as_user == 5
    assert settings.default_security_context.capabilities == config.Capabilities(drop=["ALL"])
    assert settings.default_pod_security_context.to_k8s() == {"fsGroup": 7, "runAsNonRoot": True}


def test_the_allow_list_takes_jes_comma_separated_form_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from klt_task_runner.settings import TaskRunnerSettings

    monkeypatch.setenv("KLT_JOB_EXECUTOR__ALLOWED_IMAGES", "docker.io/myorg/*, ,busybox:*")
    monkeypatch.setenv("KLT_JOB_EXECUTOR__ENABLED", "true")
    settings = TaskRunnerSettings().job_executor
    assert settings.enabled
    assert settings.allowed_images == ("docker.io/myorg/*", "busybox:*")
    monkeypatch.setenv("KLT_JOB_EXECUTOR__ALLOWED_IMAGES", '["a/*"]')
    assert TaskRunnerSettings().job_executor.allowed_images == ("a/*",)
    assert "KLT_JOB_EXECUTOR__ALLOWED_IMAGES" in os.environ


@pytest.mark.parametrize(("ttl", "expected"), [(None, 21600), (600, 600), (0, 60), (-5, 60)])
def test_ttl_defaults_and_is_at_least_a_minute(ttl: int | None, expected: int) -> None:
    task = _task() if ttl is None else _task(ttlSecondsAfterFinished=ttl)
    assert jobspec.ttl_seconds(task, SETTINGS) == expected


# -- files --------------------------------------------------------------------------------------

AVAILABLE = {
    "config.yaml": "",
    "locust__basic.py": "",
    "locust__locust.conf": "",
    "helm__values.yaml": "",
    "helm__templates__svc.yaml": "",
    "helm-abc__x": "",
    "helmDEFG": "",
    "pkg____init__.py": "",
}


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(["locust/basic.py"], [("locust/basic.py", "locust__basic.py")], id="file"),
        pytest.param(["/locust/basic.py"], [("locust/basic.py", "locust__basic.py")], id="slash"),
        pytest.param(
            ["helm"],
            [
                ("helm/templates/svc.yaml", "helm__templates__svc.yaml"),
                ("helm/values.yaml", "helm__values.yaml"),
            ],
            id="folder-without-lookalikes",
        ),
        pytest.param(
            ["/locust/", "locust/basic.py"],
            [
                ("locust/basic.py", "locust__basic.py"),
                ("locust/locust.conf", "locust__locust.conf"),
            ],
            id="deduplicated",
        ),
        pytest.param(["pkg/__init__.py"], [("pkg/__init__.py", "pkg____init__.py")], id="dunder"),
    ],
)
def test_files_are_found_by_their_encoded_keys(
    entries: list[str], expected: list[tuple[str, str]]
) -> None:
    assert jobspec.select_files(_task(name="t", files=entries), AVAILABLE) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("locust/missing.py", "could not find file or directory locust/missing.py for task t"),
        ("../etc/passwd", "invalid file path"),
        ("/", "invalid file path"),
        ("pkg", "does not decode to a path"),
    ],
)
def test_file_entries_that_cannot_be_served_are_errors(entry: str, message: str) -> None:
    with pytest.raises(jobspec.SpecError, match=message.replace(".", r"\.")):
        jobspec.select_files(_task(name="t", files=[entry]), AVAILABLE)


def test_the_files_configmap_holds_only_the_task_files() -> None:
    body = jobspec.files_configmap(
        _ref(),
        "ns",
        [("locust/basic.py", "locust__basic.py"), ("bin/tool", "bin__tool")],
        {"locust__basic.py": "print(1)", "other": "x"},
        {"bin__tool": "AAEC"},
        SETTINGS,
    )
    assert body["metadata"]["name"] == jobspec.job_name(EVENT_ID, 0, 0) + "-files"
    assert body["data"] == {"locust__basic.py": "print(1)"}
    assert body["binaryData"] == {"bin__tool": "AAEC"}
    assert len(body["metadata"]["name"]) <= 63


# -- the Job ------------------------------------------------------------------------------------


def test_the_job_body() -> None:
    task = _task(
        name="Run locust tests",
        image="locustio/locust",
        cmd=["locust"],
        args=["-f", "/keptn/locust/basic.py"],
        workingDir="/keptn",
        imagePullPolicy="always",
        annotations={"a": "b"},
    )
    env = [{"name": "X", "value": "1"}]
    files = [("locust/basic.py", "locust__basic.py")]
    body = jobspec.job(_ref(), task, namespace="jobs", env=env, files=files, settings=SETTINGS)
    name = jobspec.job_name(EVENT_ID, 0, 0)
    assert body["metadata"]["name"] == name
    assert body["metadata"]["namespace"] == "jobs"
    assert body["metadata"]["annotations"] == {"a": "b"}
    spec = body["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 21600
    assert "activeDeadlineSeconds" not in spec
    assert spec["template"]["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "klt-job-executor"
    }
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "default"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["fsGroup"] == 2000
    assert pod["volumes"] == [
        {"name": "job-volume", "emptyDir": {"sizeLimit": "20Mi"}},
        {"name": "job-files", "configMap": {"name": f"{name}-files"}},
    ]
    [container] = pod["containers"]
    assert container["name"] == name
    assert container["command"] == ["locust"]
    assert container["args"] == ["-f", "/keptn/locust/basic.py"]
    assert container["workingDir"] == "/keptn"
    assert container["imagePullPolicy"] == "always"  # passed through; the apiserver judges
    assert container["env"] == env
    assert container["volumeMounts"] == [
        {"name": "job-volume", "mountPath": "/keptn"},
        {
            "name": "job-files",
            "mountPath": "/keptn/locust/basic.py",
            "subPath": "locust__basic.py",
            "readOnly": True,
        },
    ]


def test_a_task_with_its_own_service_account_gets_that_accounts_token_setting() -> None:
    body = jobspec.job(
        _ref(),
        _task(serviceAccount="kubectl-runner", image="alpine"),
        namespace="n",
        env=[],
        files=[],
        settings=JobExecutorSettings(task_deadline_seconds=30),
    )
    pod = body["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kubectl-runner"
    assert "automountServiceAccountToken" not in pod
    assert body["spec"]["activeDeadlineSeconds"] == 30
    assert [v["name"] for v in pod["volumes"]] == ["job-volume"]
    container = pod["containers"][0]
    assert "command" not in container
    assert "imagePullPolicy" not in container


# -- image allow-list ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("globs", "image", "allowed"),
    [
        (["ghcr.io/u/img:*"], "ghcr.io/u/img:3", True),
        (["ghcr.io/u/img:*"], "ghcr.io/u/img:latest", True),
        (["ghcr.io/u/img:*"], "ghcr.io/u/img", False),
        (["docker.io/*"], "docker.io/A/x", True),
        (["docker.io/*"], "alpine", False),
        (["a.registry:1337/*"], "a.registry:1338/x", False),
        (["a.registry:1337/*"], "a.registry:1337/x:1", True),
        (["img@sha256:*"], "img@sha256:0123", True),
        (["busybox"], "busybox:1.36", False),
        (["busybox*"], "busybox:1.36", True),
        (["alp[!x]ne"], "alpine", True),
        (["alp[a-h]ne"], "alpine", False),
        (["{alpine,busybox}:*"], "busybox:1", True),
        (["{alpine,busybox}:*"], "python:3", False),
        (["a?c"], "abc", True),
        (["a\\*c"], "abc", False),
        (["a\\*c"], "a*c", True),
        (["x", "*"], "anything/at:all", True),
        ([], "anything", True),
        (["", " "], "anything", True),
    ],
)
def test_image_globs(globs: list[str], image: str, allowed: bool) -> None:
    assert images.AllowList.compile(globs).allows(image) is allowed


def test_an_unbalanced_glob_is_refused() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        images.AllowList.compile(["{a,b"])
