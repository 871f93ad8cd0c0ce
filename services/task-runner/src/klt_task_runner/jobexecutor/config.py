"""The job configuration (``apiVersion: v2``): its schema and its strict parser.

The schema is job-executor-service's, field for field (see docs/job-executor.md). Parsing is
as strict as JES's ``yaml.UnmarshalStrict``, and says where the problem is:

- an unknown key at any level, a duplicated key, or a wrong type (a string where a list is
  expected, a map where ``actions`` should be a list) is an error naming its path, e.g.
  ``actions[0].tasks[1].cmd: Input should be a valid list``;
- ``apiVersion`` must be present and equal ``v2``;
- scalars are read the way Go's YAML decoder reads them into string fields: ``value: 8080``
  is the string ``"8080"``, ``value: 2024-01-01`` stays a string, and ``key: null`` (or an
  empty value) means the key is absent.

Beyond JES, values that JES only rejected when it created the Job are checked here already,
so a broken configuration is reported before any Job of it runs: ``valueFrom`` must be
``event``, ``secret`` or ``string``; ``as`` must be ``json``, ``yaml`` or ``string``
(case-insensitive); resource values must be Kubernetes quantities; ``maxPollDuration`` must be
positive.

This module does no I/O; ``lookup`` finds the text, ``execution`` uses the result.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

API_VERSION = "v2"

_MAX_ERRORS = 5
"""Validation errors listed in one message; the rest are counted."""

_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")


class ConfigError(ValueError):
    """The job configuration cannot be used; the message says where and why."""


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 1, 128Mi)")
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]


class _Strict(BaseModel):
    """Closed, frozen, camelCase on the wire; null means absent (Go's zero value)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        use_attribute_docstrings=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class Capabilities(_Strict):
    add: list[str] | None = None
    drop: list[str] | None = None


class SeccompProfile(_Strict):
    type: str = ""
    localhost_profile: str | None = None


class SecurityContext(_Strict):
    """The subset of a container's ``securityContext`` a task may set."""

    capabilities: Capabilities | None = None
    privileged: bool | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool | None = None
    allow_privilege_escalation: bool | None = None
    proc_mount: str | None = None
    seccomp_profile: SeccompProfile | None = None

    def merged_over(self, default: SecurityContext) -> SecurityContext:
        """This context's set fields over ``default``'s; ``capabilities`` and
        ``seccompProfile`` replace the default's as wholes, as in JES."""
        update = {
            name: getattr(self, name)
            for name in type(self).model_fields
            if getattr(self, name) is not None
        }
        return default.model_copy(update=update)

    def to_k8s(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped


class PodSecurityContext(_Strict):
    """The pod-level security context every job gets (a setting, not part of the config)."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    fs_group: int | None = None
    fs_group_change_policy: str | None = None
    supplemental_groups: list[int] | None = None
    seccomp_profile: SeccompProfile | None = None

    def to_k8s(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped


class ResourceList(_Strict):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(_Strict):
    limits: ResourceList | None = None
    requests: ResourceList | None = None


EnvSource = Literal["event", "secret", "string"]
EnvFormat = Literal["", "json", "yaml", "string"]


class EnvVar(_Strict):
    """One ``env`` entry.

    - ``valueFrom: event``: ``value`` is a JSONPath into the event; ``as`` formats it.
    - ``valueFrom: secret``: ``name`` is a Secret in the task's namespace; every key of it
      becomes a variable (``secretKeyRef``, so the value never passes through klt).
    - ``valueFrom: string``: ``value`` is the literal value.
    """

    name: str = ""
    value: str = ""
    value_from: str = ""
    as_: str = Field(default="", alias="as")

    @model_validator(mode="after")
    def _known_source_and_format(self) -> EnvVar:
        if self.value_from not in ("event", "secret", "string"):
            raise ValueError(
                f"could not add env with name {self.name}, unknown valueFrom "
                f"{self.value_from!r}: use event, secret or string"
            )
        if self.as_.lower() not in ("", "json", "yaml", "string"):
            raise ValueError(
                f"env {self.name}: unknown format as: {self.as_!r}: use json, yaml or string"
            )
        return self

    @property
    def source(self) -> EnvSource:
        return self.value_from  # type: ignore[return-value]  # checked above

    @property
    def format(self) -> EnvFormat:
        return self.as_.lower()  # type: ignore[return-value]  # checked above


class Task(_Strict):
    """One container, run as one Kubernetes Job."""

    name: str = ""
    image: str = ""
    image_pull_policy: str = ""
    """Passed through verbatim; empty keeps Kubernetes' default. Not validated (as in JES):
    the apiserver is the authority."""

    cmd: list[str] = []
    args: list[str] = []
    env: list[EnvVar] = []
    files: list[str] = []
    working_dir: str = ""
    resources: Resources | None = None
    """When present, even empty, no default requests or limits apply."""

    max_poll_duration: int | None = Field(default=None, ge=1)
    namespace: str = ""
    ttl_seconds_after_finished: int | None = None
    """Values below 60 are raised to 60, as in JES."""

    security_context: SecurityContext | None = None
    service_account: str = ""
    annotations: dict[str, str] = {}


class JsonPathFilter(_Strict):
    property_: str = Field(default="", alias="property")
    match: str = ""


class EventFilter(_Strict):
    name: str = ""
    """A regular expression searched (unanchored) in the CloudEvent type."""

    jsonpath: JsonPathFilter | None = None


class Action(_Strict):
    name: str = ""
    silent: bool = False
    """Send no ``.started``/``.finished`` for this action, and swallow its errors."""

    events: list[EventFilter] = []
    tasks: list[Task] = []


class JobConfig(_Strict):
    api_version: str
    actions: list[Action] = []


# --------------------------------------------------------------------------------------------
# Parsing


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML where plain scalars stay strings (null aside) and duplicate keys are errors."""


_KEPT_RESOLVERS = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")

# Go's decoder puts a scalar's text into a string field whatever it looks like; integer and
# boolean fields convert the text themselves (pydantic does the same in lax mode).
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEPT_RESOLVERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Duplicates are checked among the mapping's own keys; keys merged in with '<<' may be
    # overridden by them, as YAML's merge key (and Go's decoder) allow.
    seen: set[str] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be strings", key_node.start_mark
            )
        if key_node.value in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
            )
        seen.add(key_node.value)
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"mapping keys must be strings, not {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def config_hash(text: str) -> str:
    """SHA3-224 of the configuration text, hex (the ``keptn.sh/jes-job-confighash`` label)."""
    return hashlib.sha3_224(text.encode()).hexdigest()


def parse(text: str) -> JobConfig:
    """Parse and validate one job configuration.

    Raises:
        ConfigError: with a message naming the path of each problem (up to five).
    """
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {_yaml_problem(exc)}") from None
    if raw is None:
        raise ConfigError("apiVersion must be specified")
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping, not {_kind(raw)}")
    version = raw.get("apiVersion")
    if version is None or version == "":
        raise ConfigError("apiVersion must be specified")
    if version != API_VERSION:
        raise ConfigError(f"apiVersion {version} is not supported, use {API_VERSION}")
    try:
        return JobConfig.model_validate(raw, by_alias=True, by_name=False)
    except pydantic.ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def describe(exc: pydantic.ValidationError) -> str:
    """``path: problem`` for each error, ``; ``-separated, the paths in YAML terms."""
    parts: list[str] = []
    errors = exc.errors(include_url=False, include_input=False)
    for error in errors[:_MAX_ERRORS]:
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        path = _path(error["loc"])
        parts.append(f"{path}: {message}" if path else message)
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return "; ".join(parts)


_PLAIN_KEY = re.compile(r"^[A-Za-z_][-\w.]*$")


def _path(loc: tuple[int | str, ...]) -> str:
    """``actions[0].tasks[1].cmd``; keys that would read ambiguously are quoted: ``[""]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "malformed"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return problem
    return str(exc)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
