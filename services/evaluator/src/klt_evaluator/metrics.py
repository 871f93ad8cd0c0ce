"""KeptnMetric: fetch every metric on its own interval and write the result into its status.

Scheduling
----------
One timer heap for all metrics, not one reconcile per metric. Each metric is due at
``status.lastUpdated + fetchIntervalSeconds`` (never earlier than now), so a restarted
evaluator does not fetch everything at once, and a metric fetched a second before the restart
waits out its interval. New metrics (ADDED) are fetched at once when they have no
``lastUpdated``; a changed spec (a new ``metadata.generation``) is fetched at once. Our own
status writes come back through the watch as MODIFIED events with an unchanged generation and
are ignored. After a fetch the next one is due ``fetchIntervalSeconds`` after this one
*started*, so the period does not drift by the query's duration.

A failed fetch is retried on the same interval (Keptn stopped fetching a failed metric until its
spec changed), which is never a hot loop: intervals are floored at
``min_fetch_interval_seconds``. At most ``fetch_concurrency`` fetches run at once.

Status
------
``value`` (the provider's rendering, or the aggregate for ``range.step``), ``rawValue`` (the
provider's raw answer, capped at 1 MiB, base64 on the wire as Go's ``[]byte``), ``lastUpdated``
and ``errMsg`` (cleared by the next success). A failed fetch empties ``value`` as Keptn did, so
an evaluation never passes on a stale number. A result that is NaN or infinite is a failure
("... is not a finite number"). With ``range.storedResults > 0`` every fetch also appends an
entry to ``intervalResults`` (oldest dropped first, at most 255).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import ValidationError

from klt_common.aiokits.tasks import TaskPool
from klt_common.clients import cluster as k8s
from klt_common.structs.api._base import parse_duration
from klt_common.structs.api.enums import Aggregation
from klt_common.structs.api.metrics import KeptnMetricSpec
from klt_evaluator import clock
from klt_evaluator.aggregation import aggregate
from klt_evaluator.lookups import METRICS, Lookups
from klt_evaluator.numbers import describe_non_finite, format_plain, parse_number
from klt_evaluator.providers import ProviderError, Providers, Query
from klt_evaluator.settings import EvaluatorSettings

_log = logging.getLogger(__name__)

RAW_VALUE_LIMIT = 1 << 20
"""Keptn caps ``status.rawValue`` at 1 MiB (``cupSize``)."""

MAX_STORED_RESULTS = 255

Key = tuple[str, str]
"""(namespace, name) of a KeptnMetric."""


def encode_raw(raw: bytes) -> str:
    return base64.b64encode(raw[:RAW_VALUE_LIMIT]).decode()


@dataclass(frozen=True)
class Outcome:
    """What one fetch produced."""

    value: str
    raw: bytes
    error: str | None


class FetchFailed(Exception):
    """A fetch ended without a usable value; the message is the errMsg."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw


def build_query(spec: KeptnMetricSpec, now: datetime) -> Query:
    """The provider query for a metric's spec at ``now``.

    Raises:
        FetchFailed: the range cannot be read.
    """
    rng = spec.range
    if rng is None:
        return Query(text=spec.query, end=now)
    try:
        interval = parse_duration(rng.interval)
    except ValueError:
        raise FetchFailed(f"range.interval {rng.interval!r} is not a duration") from None
    if interval.total_seconds() <= 0:
        raise FetchFailed(f"range.interval {rng.interval!r} must be positive")
    variables = {"interval": rng.interval, "step": rng.step or ""}
    if rng.step:
        try:
            step = parse_duration(rng.step)
        except ValueError:
            raise FetchFailed(f"range.step {rng.step!r} is not a duration") from None
        if step.total_seconds() <= 0:
            raise FetchFailed(f"range.step {rng.step!r} must be positive")
        if rng.aggregation is None:
            raise FetchFailed("range.step requires range.aggregation")
        return Query(
            text=spec.query,
            start=now - interval,
            end=now,
            step=step,
            step_text=rng.step,
            series=True,
            variables=variables,
        )
    if rng.aggregation is not None:
        raise FetchFailed("range.aggregation requires range.step")
    return Query(text=spec.query, start=now - interval, end=now, step=interval, variables=variables)


def finish(spec: KeptnMetricSpec, values: tuple[float, ...], text: str) -> str:
    """The status value from a reading: the provider's text, or the step aggregate.

    Raises:
        FetchFailed: no values, or a value that is not finite.
    """
    if spec.range is not None and spec.range.step:
        assert spec.range.aggregation is not None
        try:
            number = aggregate(values, Aggregation(spec.range.aggregation))
        except ValueError as exc:
            raise FetchFailed(str(exc)) from None
        text = format_plain(number)
    else:
        number = values[0]
    if (special := describe_non_finite(number)) is not None:
        raise FetchFailed(f"query result is {special}, not a finite number")
    return text


def status_patch(
    spec: KeptnMetricSpec,
    previous: list[dict[str, Any]] | None,
    outcome: Outcome,
    moment: datetime,
) -> dict[str, Any]:
    """The merge patch for ``status`` after one fetch (FIFO ``intervalResults`` included)."""
    stamp = clock.format_time(moment)
    status: dict[str, Any] = {
        "value": outcome.value,
        "rawValue": encode_raw(outcome.raw),
        "lastUpdated": stamp,
        "errMsg": outcome.error,  # None deletes a previous error (merge patch)
    }
    stored = spec.range.stored_results if spec.range else None
    if spec.range is not None and stored:
        item: dict[str, Any] = {
            "value": outcome.value,
            "range": spec.range.model_dump(mode="json", by_alias=True, exclude_none=True),
            "lastUpdated": stamp,
        }
        if outcome.error:
            item["errMsg"] = outcome.error
        history = [*(previous or []), item]
        status["intervalResults"] = history[-min(stored, MAX_STORED_RESULTS) :]
    return status


@dataclass
class _Entry:
    key: Key
    generation: int
    due: float
    running: bool = False
    dirty: bool = False
    spec: KeptnMetricSpec | None = None
    spec_error: str | None = None
    history: list[dict[str, Any]] | None = None
    history_stamp: datetime | None = None


@dataclass
class MetricLoop:
    """Fetches every KeptnMetric of this shard on its interval."""

    settings: EvaluatorSettings
    cluster: k8s.ClusterClient
    cache: k8s.WatchCache
    lookups: Lookups
    providers: Providers
    registry: CollectorRegistry
    _entries: dict[Key, _Entry] = field(default_factory=dict)
    _heap: list[tuple[float, int, Key]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._events = self.cache.subscribe()
        self._fetch_count = Counter(
            "klt_evaluator_metric_fetches",
            "KeptnMetric fetches, by provider type and result",
            ["provider_type", "result"],
            registry=self.registry,
        )
        self._fetch_seconds = Histogram(
            "klt_evaluator_metric_fetch_seconds",
            "Time from the start of a KeptnMetric fetch to its status write",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
            registry=self.registry,
        )
        self._pool = TaskPool("metric-fetch", limit=self.settings.evaluator.fetch_concurrency)

    # -- scheduling ---------------------------------------------------------------------------

    def _interval(self, spec: KeptnMetricSpec | None) -> float:
        seconds = float(spec.fetch_interval_seconds) if spec is not None else 10.0
        return max(seconds, self.settings.evaluator.min_fetch_interval_seconds)

    def _schedule(self, entry: _Entry, due: float) -> None:
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), entry.key))
        if self._heap[0][2] == entry.key:
            self._wake.set()

    def _parse(self, entry: _Entry, body: k8s.Body) -> None:
        try:
            entry.spec = KeptnMetricSpec.model_validate(body.get("spec") or {})
            entry.spec_error = None
        except ValidationError as exc:
            entry.spec = None
            entry.spec_error = "invalid spec: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)[:3]
            )

    def observe(self, kind: str, body: k8s.Body) -> None:
        """Apply one watch event (or an object of the initial list) to the schedule."""
        key = k8s.WatchCache.key_of(body)
        if kind == "DELETED":
            self._entries.pop(key, None)
            return
        meta = body.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        entry = self._entries.get(key)
        loop_now = asyncio.get_running_loop().time()
        if entry is None:
            entry = _Entry(key, generation, loop_now)
            self._entries[key] = entry
            self._parse(entry, body)
            last = clock.parse_time((body.get("status") or {}).get("lastUpdated"))
            delay = 0.0
            if last is not None:
                elapsed = (datetime.now(UTC) - last).total_seconds()
                delay = max(0.0, self._interval(entry.spec) - elapsed)
            self._schedule(entry, loop_now + delay)
        elif generation != entry.generation:
            entry.generation = generation
            self._parse(entry, body)
            if entry.running:
                entry.dirty = True
            else:
                self._schedule(entry, loop_now)

    async def run(self, stop: asyncio.Event) -> None:
        await clock.wait_or_stop(self.cache.wait_synced(), stop)
        if stop.is_set():
            return
        for body in self.cache.values():
            self.observe("ADDED", body)
        helpers = [
            asyncio.create_task(self._follow(stop), name="metrics:follow"),
            asyncio.create_task(self._wake_on_stop(stop), name="metrics:stop"),
        ]
        try:
            await self._dispatch(stop)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._pool.drain(self.settings.shutdown.grace_seconds / 2)

    async def _wake_on_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            event = await self._events.get()
            self.observe(event.type, event.object)

    async def _dispatch(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            now = loop.time()
            while self._heap and self._heap[0][0] <= now:
                due, _, key = heapq.heappop(self._heap)
                entry = self._entries.get(key)
                if entry is None or entry.due != due or entry.running:
                    continue  # a stale heap item: rescheduled, deleted or in flight
                entry.running = True
                await self._pool.spawn(f"{key[0]}/{key[1]}", self._fetch(entry))
            self._wake.clear()
            timeout = self._heap[0][0] - loop.time() if self._heap else None
            if timeout is not None and timeout <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    # -- one fetch ------------------------------------------------------------------------------

    async def _fetch(self, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        namespace, name = entry.key
        interval = self._interval(entry.spec)
        # Count the period from when the fetch was due, not when a busy loop got to it, so
        # small delays do not accumulate; a fetch that started very late starts a new period.
        base = entry.due if 0 <= started - entry.due < 1.0 else started
        wall_due = time.time() + (base + interval - started)
        next_due = (
            base
            + interval
            + spread_delay(entry.key, wall_due, interval, self.settings.evaluator.spread_seconds)
        )
        try:
            outcome, provider_type = await self._query(entry)
            moment = datetime.now(UTC)
            history: list[dict[str, Any]] | None = entry.history
            body = self.cache.get(name, namespace)
            cached_status = (body or {}).get("status") or {}
            cached_stamp = clock.parse_time(cached_status.get("lastUpdated"))
            if history is None or (
                cached_stamp is not None
                and (entry.history_stamp is None or cached_stamp > entry.history_stamp)
            ):
                cached_history = cached_status.get("intervalResults")
                history = cached_history if isinstance(cached_history, list) else None
            assert entry.spec is not None or outcome.error is not None
            patch = (
                status_patch(entry.spec, history, outcome, moment)
                if entry.spec is not None
                else {
                    "value": "",
                    "lastUpdated": clock.format_time(moment),
                    "errMsg": outcome.error,
                }
            )
            try:
                await self.cluster.patch_status(METRICS, name, patch, namespace)
            except k8s.NotFound:
                self._entries.pop(entry.key, None)
                return
            except k8s.ApiError as exc:
                _log.warning(
                    "could not write status of KeptnMetric %s/%s: %s", namespace, name, exc
                )
                next_due = loop.time() + self.settings.evaluator.status_retry_seconds
                return
            written = patch.get("intervalResults")
            entry.history = written if isinstance(written, list) else None
            entry.history_stamp = moment
            self._fetch_count.labels(provider_type, "error" if outcome.error else "ok").inc()
            self._fetch_seconds.observe(loop.time() - started)
            if outcome.error:
                _log.info("KeptnMetric %s/%s: %s", namespace, name, outcome.error)
        except Exception:  # noqa: BLE001 - one broken metric must not stop the loop
            _log.exception("fetching KeptnMetric %s/%s failed unexpectedly", namespace, name)
            next_due = loop.time() + self._interval(entry.spec)
        finally:
            entry.running = False
            if entry.key in self._entries:
                if entry.dirty:
                    entry.dirty = False
                    next_due = loop.time()
                self._schedule(entry, max(next_due, loop.time()))

    async def _query(self, entry: _Entry) -> tuple[Outcome, str]:
        namespace, _ = entry.key
        if entry.spec is None:
            return Outcome("", b"", entry.spec_error or "invalid spec"), "unknown"
        spec = entry.spec
        provider_type = "unknown"
        try:
            config = await self.lookups.provider(spec.provider.name, namespace)
            provider_type = config.type
            query = build_query(spec, datetime.now(UTC))
            reading = await self.providers.fetch(config, query)
            value = finish(spec, reading.values, reading.text)
            return Outcome(value, reading.raw, None), provider_type
        except ProviderError as exc:
            return Outcome("", exc.raw, str(exc)), provider_type
        except FetchFailed as exc:
            return Outcome("", exc.raw, str(exc)), provider_type


def spread_delay(key: Key, due: float, interval: float, spread: float) -> float:
    """Seconds to add to a fetch due at wall time ``due`` to land on the metric's own phase.

    Every metric gets a fixed phase, from a hash of its namespace and name, within a window of
    ``min(interval, spread)`` seconds, and its fetches are moved (never earlier) onto that
    phase. Metrics created together would otherwise be fetched together forever, as one burst
    of queries and status writes per interval; with phases they spread evenly. Once a metric is
    on its phase the delay is 0 and its period is exactly its interval.
    """
    window = min(interval, spread)
    if window <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{key[0]}/{key[1]}".encode(), digest_size=8).digest()
    phase = int.from_bytes(digest, "big") / 2**64 * window
    delay = (phase - due) % window
    # Just past the phase (a fetch a little late, float rounding) counts as on it.
    return 0.0 if delay > window - min(1.0, window / 10) else delay


def normalise_name(name: str) -> str:
    """A KeptnMetric name as a Prometheus metric name: ``[A-Za-z0-9_]``, no leading digit."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)
    return "_" + out if out[:1].isdigit() or not out else out


class MetricValuesCollector:
    """Serves every KeptnMetric's value as a gauge, straight from the watch cache.

    One gauge family per normalised metric name (HELP: the metric's name, as Keptn's), with the
    labels ``namespace`` and ``metric`` so two metrics whose names normalise alike, or share a
    name in two namespaces, stay apart. Computed on scrape: no timer, no per-metric objects.
    """

    def __init__(self, cache: k8s.WatchCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for body in self._cache.values():
            text = (body.get("status") or {}).get("value")
            if not text:
                continue
            try:
                value = parse_number(str(text))
            except ValueError:
                continue
            meta = body.get("metadata") or {}
            name = str(meta.get("name", ""))
            family_name = normalise_name(name)
            family = families.get(family_name)
            if family is None:
                family = GaugeMetricFamily(family_name, name, labels=["namespace", "metric"])
                families[family_name] = family
            family.add_metric([str(meta.get("namespace", "")), name], value)
        yield from families.values()
