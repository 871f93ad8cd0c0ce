"""Test helpers that play the apiserver's part for CRD schemas, without a cluster.

- :func:`structural_problems` checks the rules of a *structural* schema (what the apiserver
  insists on before it serves a CRD);
- :func:`validation_problems` validates a value against a schema the way the apiserver does for
  the subset of OpenAPI our generator emits, and reports unknown fields that pruning would drop;
- :func:`apply_defaults` fills in ``default`` values as apiserver defaulting would;
- :func:`values_for` is a Hypothesis strategy for values that satisfy a schema.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from klt_common.structs.api.metrics import PROVIDER_TYPE_PATTERN

_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
_FORBIDDEN = {"$ref", "definitions", "$defs", "dependencies", "patternProperties"}


def structural_problems(schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Every violation of the structural-schema rules in ``schema`` (empty when structural)."""
    problems: list[str] = []
    here = path or "<root>"
    problems.extend(f"{here}: uses {key}" for key in _FORBIDDEN if key in schema)
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    node_type = schema.get("type")
    if node_type is None:
        if not (int_or_string or preserve):
            problems.append(f"{here}: no type")
    elif node_type not in _TYPES:
        problems.append(f"{here}: unknown type {node_type!r}")
    for junctor in _JUNCTORS:
        if junctor not in schema:
            continue
        if int_or_string and junctor == "anyOf" and schema[junctor] == _INT_OR_STRING:
            continue
        problems.append(f"{here}: {junctor} is only allowed for x-kubernetes-int-or-string")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{here}: both properties and additionalProperties")
    if ("properties" in schema or "additionalProperties" in schema) and node_type not in (
        "object",
        None,
    ):
        problems.append(f"{here}: properties on a non-object")
    if node_type == "array" and not isinstance(schema.get("items"), Mapping):
        problems.append(f"{here}: array without a single items schema")
    for name, child in schema.get("properties", {}).items():
        problems.extend(structural_problems(child, f"{path}.{name}"))
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        problems.extend(structural_problems(additional, f"{path}.*"))
    elif additional is not None:
        problems.append(f"{here}: additionalProperties must be a schema")
    if isinstance(schema.get("items"), Mapping):
        problems.extend(structural_problems(schema["items"], f"{path}[]"))
    problems.extend(
        f"{here}: required {name!r} is not a property"
        for name in schema.get("required", [])
        if name not in schema.get("properties", {})
    )
    if "default" in schema:
        problems.extend(
            f"{here}: default does not validate: {problem}"
            for problem in validation_problems(schema, schema["default"])
        )
    return problems


def root_problems(schema: Mapping[str, Any]) -> list[str]:
    """Rules that hold only at the top of a CRD version's schema."""
    problems = structural_problems(schema)
    if schema.get("type") != "object":
        problems.append("<root>: must be an object")
    metadata = schema.get("properties", {}).get("metadata")
    if metadata is not None and dict(metadata) != {"type": "object"}:
        problems.append("<root>.metadata: may only say type: object")
    return problems


def _type_ok(expected: str, value: Any) -> bool:
    checks = {
        "object": lambda v: isinstance(v, Mapping),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    return checks[expected](value)


def _is_date_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def validation_problems(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """Why ``value`` would be rejected (or pruned) by the apiserver under ``schema``."""
    here = path or "<root>"
    if schema.get("x-kubernetes-int-or-string"):
        if not (_type_ok("integer", value) or _type_ok("string", value)):
            return [f"{here}: expected int or string, got {value!r}"]
        return []
    node_type = schema.get("type")
    if node_type is None:
        return []
    if not _type_ok(node_type, value):
        return [f"{here}: expected {node_type}, got {type(value).__name__}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{here}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{here}: {value!r} does not match {schema['pattern']}")
    if schema.get("format") == "date-time" and not _is_date_time(value):
        problems.append(f"{here}: {value!r} is not a date-time")
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(f"{here}: {value!r} is shorter than {schema['minLength']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{here}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{here}: {value} > {schema['maximum']}")
    if node_type == "array":
        for index, item in enumerate(value):
            problems.extend(validation_problems(schema["items"], item, f"{path}[{index}]"))
    if node_type == "object":
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        # A bare {type: object} is how metadata is declared; the apiserver handles it itself.
        bare = "properties" not in schema and additional is None
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True or bare
        problems.extend(
            f"{here}: missing required {name!r}"
            for name in schema.get("required", [])
            if name not in value
        )
        for key, item in value.items():
            child = f"{path}.{key}"
            if key in properties:
                problems.extend(validation_problems(properties[key], item, child))
            elif isinstance(additional, Mapping):
                problems.extend(validation_problems(additional, item, child))
            elif not preserve:
                problems.append(f"{child}: unknown field (the apiserver would prune it)")
    return problems


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, as apiserver defaulting does."""
    value = copy.deepcopy(value)
    _default_in_place(schema, value)
    return value


def _default_in_place(schema: Mapping[str, Any], value: Any) -> None:
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                _default_in_place(child, value[name])
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for item in value.values():
                _default_in_place(additional, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _default_in_place(schema["items"], item)


# --- Hypothesis strategies ---------------------------------------------------------------------

_DURATION_PATTERN = r"^0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
_PATTERN_STRATEGIES: dict[str, st.SearchStrategy[str]] = {
    _DURATION_PATTERN: st.sampled_from(["0", "5s", "5m", "1h30m", "250ms", "1.5s", "90s", "2h"]),
    PROVIDER_TYPE_PATTERN: st.sampled_from(PROVIDER_TYPE_PATTERN.split("|")),
}
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
_KEYS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_./0123456789", min_size=1, max_size=8
)
_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda moment: moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ"))
_QUANTITIES = st.one_of(
    st.integers(min_value=-(10**9), max_value=10**9),
    st.sampled_from(["500m", "1.5", "2Ki", "0", "10", "-3"]),
)
_JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), _TEXT)


def values_for(
    schema: Mapping[str, Any], *, optional_fields: bool = True
) -> st.SearchStrategy[Any]:
    """Values that satisfy ``schema``; optional properties are sometimes left out."""
    if schema.get("x-kubernetes-int-or-string"):
        return _QUANTITIES
    node_type = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    if node_type == "string":
        if "pattern" in schema:
            return _PATTERN_STRATEGIES[schema["pattern"]]
        if schema.get("format") == "date-time":
            return _TIMES
        if "minLength" in schema:
            return _TEXT.filter(lambda text: len(text) >= schema["minLength"])
        return _TEXT
    if node_type == "integer":
        return st.integers(
            min_value=schema.get("minimum", -(2**31)), max_value=schema.get("maximum", 2**31 - 1)
        )
    if node_type == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if node_type == "boolean":
        return st.booleans()
    if node_type == "array":
        return st.lists(values_for(schema["items"]), max_size=3)
    if node_type == "object":
        return _objects_for(schema, optional_fields=optional_fields)
    raise AssertionError(f"no strategy for {schema!r}")


def _objects_for(schema: Mapping[str, Any], *, optional_fields: bool) -> st.SearchStrategy[Any]:
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        return st.dictionaries(_KEYS, values_for(additional), max_size=3)
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    fixed = {name: values_for(properties[name]) for name in sorted(required)}
    optional = {
        name: values_for(child)
        for name, child in sorted(properties.items())
        if name not in required and optional_fields
    }
    base = st.fixed_dictionaries(fixed, optional=optional)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        extras = st.dictionaries(
            _KEYS.filter(lambda key: key not in properties), _JSON_LEAVES, max_size=2
        )
        return st.tuples(base, extras).map(lambda pair: {**pair[1], **pair[0]})
    return base
