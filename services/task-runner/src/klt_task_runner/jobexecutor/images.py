"""The image allow-list: globs as JES's ``ALLOWED_IMAGE_LIST`` understood them.

JES compiled each entry with gobwas/glob and no separators, and matched whole image strings:

- ``*`` matches any run of characters, ``/`` and ``:`` included (``docker.io/*`` allows
  ``docker.io/org/img:1``); ``?`` matches one character;
- ``[abc]``, ``[a-z]`` and their negations ``[!abc]`` match one character;
- ``{a,b}`` matches either alternative; ``\\`` escapes the next character;
- nothing is normalised: ``alpine`` does not match ``docker.io/*``.

An empty list, or one containing ``*``, allows every image.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


def translate(glob: str) -> str:
    """The regular expression (whole-string) of one glob.

    Raises:
        ValueError: unbalanced ``{``/``}``.
    """
    out: list[str] = []
    depth = 0
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        if char == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        if char == "*":
            while i + 1 < n and glob[i + 1] == "*":
                i += 1
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and (end := _class_end(glob, i)) > 0:
            out.append(_char_class(glob[i + 1 : end]))
            i = end
        elif char == "{":
            depth += 1
            out.append("(?:")
        elif char == "," and depth:
            out.append("|")
        elif char == "}" and depth:
            depth -= 1
            out.append(")")
        else:
            out.append(re.escape(char))
        i += 1
    if depth:
        raise ValueError(f"unbalanced '{{' in image glob {glob!r}")
    return "(?s:" + "".join(out) + r")\Z"


def _class_end(glob: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start``, or -1."""
    j = start + 1
    if j < len(glob) and glob[j] in "!^":
        j += 1
    if j < len(glob) and glob[j] == "]":
        j += 1  # a leading ']' is a member
    end = glob.find("]", j)
    return end


def _char_class(body: str) -> str:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    members = "".join(c if c == "-" else re.escape(c) for c in body)
    return f"[{'^' if negate else ''}{members}]"


@dataclass(frozen=True)
class AllowList:
    """Compiled globs; ``allows`` answers for one image."""

    patterns: tuple[str, ...]
    _compiled: tuple[re.Pattern[str], ...]

    @classmethod
    def compile(cls, globs: Iterable[str]) -> AllowList:
        """Compile the non-empty entries.

        Raises:
            ValueError: an entry is not a valid glob.
        """
        patterns = tuple(g.strip() for g in globs if g.strip())
        compiled = tuple(re.compile(translate(g)) for g in patterns)
        return cls(patterns, compiled)

    @property
    def allows_everything(self) -> bool:
        return not self.patterns or "*" in self.patterns

    def allows(self, image: str) -> bool:
        if self.allows_everything:
            return True
        return any(pattern.match(image) for pattern in self._compiled)
