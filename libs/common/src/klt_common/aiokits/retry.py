"""Retries that walk a configured list of delays.

The delays come from settings (never hard-coded at call sites), so tests can set them to an
empty list and production can tune them per deployment. An empty list means "one attempt".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from klt_common.aiokits.errors import PermanentError, TemporaryError

T = TypeVar("T")

_log = logging.getLogger(__name__)


def is_temporary_default(exc: BaseException) -> bool:
    """Only explicitly temporary errors are retried unless the caller says otherwise."""
    return isinstance(exc, TemporaryError)


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    delays: Sequence[float],
    what: str,
    is_temporary: Callable[[BaseException], bool] = is_temporary_default,
    stop: asyncio.Event | None = None,
) -> T:
    """Run ``operation``, retrying temporary failures after each delay in ``delays``.

    Args:
        operation: a zero-argument coroutine factory; called once per attempt.
        delays: seconds to wait before each retry; ``len(delays) + 1`` attempts in total.
        what: a short description for the log lines.
        is_temporary: classifies an exception as worth retrying.
        stop: when set, waiting ends early and the last error is raised.

    Raises:
        The last exception when attempts run out, or at once for a non-temporary one.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except PermanentError:
            raise
        except Exception as exc:
            if not is_temporary(exc) or attempt > len(delays):
                raise
            delay = delays[attempt - 1]
            hint = exc.delay if isinstance(exc, TemporaryError) else None
            if hint is not None:
                delay = max(delay, hint)
            _log.warning(
                "%s failed (attempt %d of %d), retrying in %.2fs: %s",
                what,
                attempt,
                len(delays) + 1,
                delay,
                exc,
            )
            if await sleep_or_stop(delay, stop):
                raise


async def sleep_or_stop(seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep, but wake early when ``stop`` is set. Returns True when stopped."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
