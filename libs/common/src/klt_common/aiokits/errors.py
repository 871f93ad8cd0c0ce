"""The error taxonomy that every retry loop in klt understands.

Handlers do not return booleans to say "try again": they raise. A ``TemporaryError`` means the
same input may succeed later (the apiserver is restarting, a dependency has not been created
yet); a ``PermanentError`` means retrying cannot help (the input is malformed), so the message
goes to the dead-letter topic or the resource gets a clear status at once.
"""

from __future__ import annotations


class TemporaryError(Exception):
    """Retry later, optionally no sooner than ``delay`` seconds from now."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """Retrying will not help; report the problem and move on."""
