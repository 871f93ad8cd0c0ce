"""Keptn's discovery rules: key precedence, parent inheritance, version inference, names."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klt_common.structs import discovery as d

RS_OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f", "uid": "u-1"}


def _pod(
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-5d9f-abcde",
            "annotations": annotations or {},
            "labels": labels or {},
            "ownerReferences": [owner or RS_OWNER],
        },
        "spec": {"containers": containers or [{"name": "web", "image": "nginx:1.27"}]},
    }


@pytest.mark.parametrize(
    ("annotations", "labels", "expected"),
    [
        pytest.param({d.WORKLOAD: "a"}, {d.WORKLOAD: "b"}, "a", id="keptn-annotation-beats-label"),
        pytest.param({d.K8S_WORKLOAD: "c"}, {d.WORKLOAD: "b"}, "b", id="keptn-label-beats-k8s"),
        pytest.param({d.K8S_WORKLOAD: "c"}, {d.K8S_WORKLOAD: "e"}, "c", id="k8s-annotation-first"),
        pytest.param({}, {d.K8S_WORKLOAD: "e"}, "e", id="k8s-label-last"),
        pytest.param({d.WORKLOAD: ""}, {d.K8S_WORKLOAD: "e"}, "e", id="empty-counts-as-absent"),
    ],
)
def test_keys_are_read_with_keptns_precedence(
    annotations: dict[str, str], labels: dict[str, str], expected: str
) -> None:
    meta = {"annotations": annotations, "labels": labels}
    assert d.label_or_annotation(meta, d.WORKLOAD, d.K8S_WORKLOAD) == expected


def test_an_annotated_pod_gets_keptns_names() -> None:
    pod = _pod(
        {
            d.WORKLOAD: "Waiter",
            d.APP: "Shop",
            d.VERSION: "0.4.0_1",
            d.PRE_TASKS: "a, b,,c",
            d.METADATA: "team=x,broken,env=prod",
        }
    )
    found = d.discover(pod)
    assert found is not None
    assert (found.app, found.workload, found.version) == ("shop", "shop-waiter", "0.4.0_1")
    assert found.workload_version == "shop-waiter-0.4.0-1"
    assert found.pre_deployment_tasks == ["a", "b", "c"]
    assert found.metadata == {"team": "x", "env": "prod"}
    assert not found.single_service
    assert found.annotations == {}
    assert found.owner["uid"] == "u-1"


def test_a_pod_without_an_app_is_a_single_service_app_named_after_its_workload() -> None:
    found = d.discover(_pod({d.WORKLOAD: "waiter", d.VERSION: "1"}))
    assert found is not None
    assert (found.app, found.workload, found.workload_version) == (
        "waiter",
        "waiter-waiter",
        "waiter-waiter-1",
    )
    assert found.single_service
    assert found.annotations == {d.APP: "waiter", d.APP_TYPE: d.SINGLE_SERVICE}
    # Once the webhook wrote those annotations, the pod still reads as single-service.
    again = d.discover(_pod({d.WORKLOAD: "waiter", d.VERSION: "1", **found.annotations}))
    assert again is not None
    assert again.single_service


def test_keys_come_from_the_parent_when_the_pod_has_none() -> None:
    parent = {
        "labels": {d.K8S_WORKLOAD: "cart", d.K8S_APP: "shop", d.K8S_VERSION: "2.0"},
        "annotations": {d.POST_TASKS: "notify"},
    }
    found = d.discover(_pod(), parent)
    assert found is not None
    assert (found.app, found.workload, found.version) == ("shop", "shop-cart", "2.0")
    assert found.post_deployment_tasks == ["notify"]
    assert found.annotations == {d.WORKLOAD: "cart", d.APP: "shop", d.POST_TASKS: "notify"}


def test_unannotated_pods_and_unsupported_owners_are_not_discovered() -> None:
    assert d.discover(_pod()) is None
    assert d.discover(_pod(), {"labels": {"team": "x"}}) is None
    job_owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}
    assert d.discover(_pod({d.WORKLOAD: "w"}, owner=job_owner)) is None


def test_the_version_is_the_tag_of_the_container_named_by_the_annotation() -> None:
    containers = [{"name": "app", "image": "repo/app:1.2.3"}, {"name": "side", "image": "x:9"}]
    assert d.calculate_version(containers, "app") == "1.2.3"
    found = d.discover(
        _pod({d.WORKLOAD: "w", d.APP: "a", d.CONTAINER: "app"}, containers=containers)
    )
    assert found is not None
    assert found.version == "1.2.3"
    assert found.annotations == {d.VERSION: "1.2.3"}


def test_without_a_usable_tag_the_version_is_the_fnv_hash_of_the_containers() -> None:
    containers = [{"name": "app", "image": "repo/app:latest", "env": [{"name": "A", "value": "1"}]}]
    seed = b"apprepo/app:latestA1"
    expected = 0x811C9DC5
    for byte in seed:
        expected = ((expected ^ byte) * 0x01000193) & 0xFFFFFFFF
    assert d.calculate_version(containers, "app") == str(expected)
    assert d.calculate_version(containers) == str(expected)
    assert d.calculate_version([]) == "2166136261"  # FNV-32a offset basis: nothing hashed


def test_a_container_annotation_that_names_no_container_is_an_error_saying_so() -> None:
    with pytest.raises(d.DiscoveryError, match=r"names container 'db'.*its containers: web"):
        d.discover(_pod({d.WORKLOAD: "w", d.CONTAINER: "db"}))


def test_names_that_cannot_be_kubernetes_names_are_errors_saying_which_key() -> None:
    with pytest.raises(d.DiscoveryError, match="not a valid Kubernetes name"):
        d.discover(_pod({d.WORKLOAD: "my workload!", d.VERSION: "1"}))
    with pytest.raises(d.DiscoveryError, match="at most 253"):
        d.discover(_pod({d.WORKLOAD: "w", d.APP: "a", d.VERSION: "v" * 300}))


def test_long_names_shorten_the_leading_parts_first() -> None:
    name = d.create_resource_name("a" * 200, "b" * 100, "1.0")
    assert len(name) == 253
    assert name.endswith("-" + "b" * 100 + "-1.0")
    assert name.startswith("a" * 80)


@given(st.lists(st.text(alphabet="abc-_XYZ019", min_size=1, max_size=200), min_size=1, max_size=4))
def test_resource_names_fit_whenever_the_last_part_leaves_room(parts: list[str]) -> None:
    name = d.create_resource_name(*parts)
    if len(parts[-1]) + (len(parts) - 1) * 41 <= d.MAX_NAME_LENGTH:
        assert len(name) <= d.MAX_NAME_LENGTH
    assert name == name.lower()
    assert "_" not in name


def test_app_version_names_and_automatic_versions_follow_keptns_formulas() -> None:
    assert [d.generation_hash(g) for g in (1, 2, 3)] == ["6b86b273", "d4735e3a", "4e074085"]
    assert d.app_version_name("shop", "1.0", 1) == "shop-1.0-6b86b273"
    assert d.automatic_app_version([("shop-cart", "2.0")]) == "2.0"
    several = d.automatic_app_version([("shop-web", "1"), ("shop-cart", "2")])
    assert several == d.automatic_app_version([("shop-cart", "2"), ("shop-web", "1")])
    assert len(several) == 10


_meta_values = st.one_of(st.none(), st.text(max_size=40), st.integers(), st.lists(st.text()))


@given(
    st.dictionaries(
        st.sampled_from(
            [
                d.WORKLOAD,
                d.APP,
                d.VERSION,
                d.CONTAINER,
                d.METADATA,
                d.PRE_TASKS,
                d.K8S_WORKLOAD,
                "x",
            ]
        ),
        st.text(max_size=300),
    ),
    st.lists(
        st.fixed_dictionaries({"name": st.text(max_size=20), "image": st.text(max_size=40)}),
        max_size=3,
    ),
)
def test_discovery_either_answers_or_raises_its_own_error(
    annotations: dict[str, str], containers: list[dict[str, Any]]
) -> None:
    found: d.Discovery | None = None
    error = ""
    try:
        found = d.discover(_pod(annotations, containers=containers))
    except d.DiscoveryError as exc:
        error = str(exc)
    assert found is None or not error
    if found is not None:
        assert d.is_valid_name(found.workload_version)
