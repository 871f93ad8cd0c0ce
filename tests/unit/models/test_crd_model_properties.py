"""Property tests: the models and the generated CRDs describe the same objects.

For every kind, Hypothesis draws a spec and a status that the CRD's v1 schema accepts. The
apiserver would store them with its defaults filled in; the model must parse that stored object
and write back exactly the same JSON, and what it writes must again pass the CRD. Any field that
one side knows and the other does not, any default that differs, or any type that is narrower
on one side shows up here.
"""

from __future__ import annotations

from typing import Any

import pytest
from crd_schema_tools import apply_defaults, validation_problems, values_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klt_common.structs import api, crdgen

KINDS = api.resource_kinds()
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _storage_schema(entry: api.ResourceKind) -> dict[str, Any]:
    (storage,) = [v for v in crdgen.crd_for(entry)["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = storage["schema"]["openAPIV3Schema"]
    return schema


def _objects(entry: api.ResourceKind) -> st.SearchStrategy[dict[str, Any]]:
    properties = _storage_schema(entry)["properties"]
    status = st.one_of(st.none(), values_for(properties["status"]))

    def build(spec: Any, status_value: Any) -> dict[str, Any]:
        obj = {
            "apiVersion": entry.api_version,
            "kind": entry.kind,
            "metadata": {"name": "generated", "namespace": "default"},
            "spec": spec,
        }
        if status_value is not None:
            obj["status"] = status_value
        return obj

    return st.builds(build, values_for(properties["spec"]), status)


@pytest.mark.parametrize("entry", KINDS, ids=lambda entry: entry.kind)
@SETTINGS
@given(data=st.data())
def test_what_the_crd_stores_the_model_reads_and_writes_back_unchanged(
    entry: api.ResourceKind, data: st.DataObject
) -> None:
    schema = _storage_schema(entry)
    stored = apply_defaults(schema, data.draw(_objects(entry)))
    assert validation_problems(schema, stored) == []

    model = entry.model.model_validate(stored)
    written = model.to_manifest()

    assert written == stored
    assert api.unknown_fields(model) == []
    assert validation_problems(schema, written) == []


@pytest.mark.parametrize("entry", KINDS, ids=lambda entry: entry.kind)
@SETTINGS
@given(data=st.data())
def test_model_to_dict_to_model_is_identity(entry: api.ResourceKind, data: st.DataObject) -> None:
    stored = apply_defaults(_storage_schema(entry), data.draw(_objects(entry)))
    model = entry.model.model_validate(stored)
    assert entry.model.model_validate(model.to_manifest()) == model
    assert entry.model.model_validate(model.model_dump()) == model
