"""A task's environment: values from the event, literals, Secret references, Keptn's own.

Formatting of ``valueFrom: event`` values follows JES:

- ``as: yaml``: a YAML document, block style, with a trailing newline (``- a\\n- b\\n``);
- ``as: json``, or any value that is a mapping: compact JSON with sorted keys, and ``<``,
  ``>``, ``&`` escaped as ``\\u003c`` … the way Go's encoder writes them;
- otherwise Go's ``%v``: strings as they are, ``true``/``false``, ``<nil>`` for null, lists
  as ``[a b]``, nested mappings as ``map[k:v]``. Integral numbers print as integers
  (``4711``, also ``1000000``: Go printed ``1e+06``; see docs/compatibility.md).

After the task's own entries come ``KEPTN_PROJECT``, ``KEPTN_STAGE``, ``KEPTN_SERVICE`` and one
``LABELS_<KEY>`` per label of the event (``-`` and spaces become ``_``, then upper case;
sorted, where JES's order was random).

No I/O here: Secrets are read by the caller, which passes their key lists in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from klt_task_runner.jobexecutor import config, matching
from klt_task_runner.jobexecutor.cloudevents import Scope

EnvEntry = dict[str, Any]
"""One item of a container's ``env`` (Kubernetes JSON)."""


class EnvError(ValueError):
    """An env entry cannot be resolved; the message is JES's."""


_GO_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_GO_HTML_ESCAPES["\u2029"] = "\\u2029"


def as_json(value: Any) -> str:
    """Compact JSON, keys sorted, HTML-escaped like Go's ``encoding/json``."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in _GO_HTML_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


class _GoLikeDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks (``|-``), as Go's encoder does."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_GoLikeDumper.add_representer(str, _represent_str)


def as_yaml(value: Any) -> str:
    """A block-style YAML document with a trailing newline and no end marker."""
    text = yaml.dump(
        value,
        Dumper=_GoLikeDumper,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=True,
        width=2**31 - 1,
    )
    # PyYAML ends a lone scalar with the explicit document end; Go's encoder does not.
    return text.removesuffix("...\n")


def as_go_value(value: Any) -> str:
    """Go's ``%v`` of a decoded JSON value (numbers aside; see the module docstring)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(as_go_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "map[" + " ".join(f"{k}:{as_go_value(v)}" for k, v in items) + "]"
    return str(value)


def format_event_value(value: Any, fmt: config.EnvFormat) -> str:
    """How a value taken from the event becomes an environment variable's text."""
    if fmt == "yaml":
        return as_yaml(value)
    if fmt == "json" or isinstance(value, dict):
        return as_json(value)
    return as_go_value(value)


def event_entry(env: config.EnvVar, mapped_event: Mapping[str, Any]) -> EnvEntry:
    """The entry of a ``valueFrom: event`` variable.

    Raises:
        EnvError: the JSONPath is invalid or does not resolve (``unknown key <k>``).
    """
    try:
        value = matching.resolve(env.value, mapped_event)
    except matching.PathError as exc:
        raise EnvError(f"could not add env with name {env.name}, valueFrom event: {exc}") from None
    return {"name": env.name, "value": format_event_value(value, env.format)}


def secret_entries(env: config.EnvVar, keys: list[str]) -> list[EnvEntry]:
    """One ``secretKeyRef`` entry per key of the Secret ``env.name``, named like the key."""
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": env.name, "key": key}}}
        for key in sorted(keys)
    ]


_LABEL_NAME = re.compile(r"[- ]")


def keptn_entries(scope: Scope) -> list[EnvEntry]:
    """``KEPTN_PROJECT``, ``KEPTN_STAGE``, ``KEPTN_SERVICE`` and ``LABELS_*``."""
    entries: list[EnvEntry] = [
        {"name": "KEPTN_PROJECT", "value": scope.project},
        {"name": "KEPTN_STAGE", "value": scope.stage},
        {"name": "KEPTN_SERVICE", "value": scope.service},
    ]
    labels = sorted((str(k), v) for k, v in scope.labels.items())
    entries += [
        {
            "name": "LABELS_" + _LABEL_NAME.sub("_", key).upper(),
            "value": value if isinstance(value, str) else as_go_value(value),
        }
        for key, value in labels
    ]
    return entries
