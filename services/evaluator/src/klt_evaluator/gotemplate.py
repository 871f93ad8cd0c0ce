"""The subset of Go's ``text/template`` that AnalysisValueTemplate queries use.

Keptn renders ``AnalysisValueTemplate.spec.query`` with Go's ``text/template``, the data being
the Analysis' ``spec.args`` (a ``map[string]string``). In practice queries only substitute
arguments, so klt implements that part of the language and rejects the rest with a message
that names the unsupported action:

- ``{{.name}}`` (also ``{{ .name }}``): the argument ``name``;
- ``{{index . "name"}}``: the same, for names that are not identifiers (``my-arg``);
- ``"text"`` and ```raw``` string literals, e.g. ``{{"{{"}}`` for literal braces;
- pipelines into ``urlquery``, ``html``, ``print`` and ``printf`` (verbs ``%s %v %q %d %%``),
  e.g. ``{{.service | urlquery}}`` or ``{{printf "%s-%s" .app .env}}``; and ``len``;
- trim markers ``{{-`` and ``-}}`` (remove the whitespace before / after the action);
- comments ``{{/* ... */}}``.

Not supported: ``if``/``else``/``range``/``with``/``define``/``template``/``block``, variables
(``$x``), nested field chains (``.a.b``) and every other function.

One deliberate difference: a missing argument is an error ("missing argument ...") where Go
prints ``<no value>`` into the query, which the provider then rejects with a far less helpful
message.

Pure functions, no I/O.
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<field>\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<dot>\.)(?![A-Za-z_])
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<pipe>\|)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<var>\$[A-Za-z0-9_]*)
    | (?P<paren>[()])
    )""",
    re.VERBOSE,
)
_KEYWORDS = frozenset(
    {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
)
_FUNCTIONS = frozenset({"index", "urlquery", "html", "print", "printf", "len"})

SUBSET_HELP = (
    'klt supports {{.arg}}, {{index . "arg"}}, string literals, and pipes into urlquery, '
    "html, print, printf and len"
)


class TemplateError(ValueError):
    """The query template cannot be rendered."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokenize(action: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    stripped_end = len(action.rstrip())
    while position < stripped_end:
        match = _TOKEN.match(action, position)
        if match is None or match.end() == position:
            raise TemplateError(f"cannot parse {{{{{action}}}}} near {action[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append(_Token(kind, match.group(kind)))
        position = match.end()
    return tokens


def _unquote(token: _Token) -> str:
    if token.kind == "raw":
        return token.text[1:-1]
    try:
        value = json.loads(token.text)
    except ValueError as exc:
        raise TemplateError(f"invalid string literal {token.text}") from exc
    assert isinstance(value, str)
    return value


def _printf(fmt: str, args: list[str]) -> str:
    out: list[str] = []
    remaining = list(args)
    position = 0
    while position < len(fmt):
        char = fmt[position]
        if char != "%" or position + 1 >= len(fmt):
            out.append(char)
            position += 1
            continue
        verb = fmt[position + 1]
        position += 2
        if verb == "%":
            out.append("%")
            continue
        if verb not in "svqd":
            raise TemplateError(f"printf verb %{verb} is not supported (use %s, %v, %q or %d)")
        if not remaining:
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = remaining.pop(0)
        out.append(json.dumps(arg) if verb == "q" else arg)
    return "".join(out)


class _Renderer:
    def __init__(self, data: Mapping[str, str], source: str) -> None:
        self._data = data
        self._source = source

    def _lookup(self, name: str) -> str:
        if name not in self._data:
            known = ", ".join(sorted(self._data)) or "none"
            raise TemplateError(
                f"missing argument {name!r} in query template (spec.args has: {known})"
            )
        return self._data[name]

    def _operand(self, token: _Token) -> str:
        match token.kind:
            case "field":
                parts = token.text[1:].split(".")
                if len(parts) > 1:
                    raise TemplateError(
                        f"{token.text}: arguments are plain strings, they have no fields"
                    )
                return self._lookup(parts[0])
            case "string" | "raw":
                return _unquote(token)
            case "number":
                return token.text
            case "dot":
                raise TemplateError(
                    "{{.}} prints the whole argument map; name an argument, e.g. {{.service}}"
                )
            case _:
                raise TemplateError(f"unexpected {token.text!r} in {self._source}")

    def _call(self, name: str, args: list[_Token], piped: str | None) -> str:
        if name == "index":
            if len(args) != 2 or args[0].kind != "dot" or args[1].kind not in ("string", "raw"):
                raise TemplateError('index takes exactly `. "name"` here')
            if piped is not None:
                raise TemplateError("index cannot take a piped value")
            return self._lookup(_unquote(args[1]))
        values = [self._operand(a) for a in args]
        if piped is not None:
            values.append(piped)
        if name == "printf":
            if not values:
                raise TemplateError("printf needs a format string")
            return _printf(values[0], values[1:])
        text = "".join(values)  # fmt.Sprint: no spaces between string operands
        if name == "urlquery":
            return urllib.parse.quote_plus(text, safe="")
        if name == "html":
            return (
                html.escape(text, quote=True).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")
            )
        if name == "len":
            if len(values) != 1:
                raise TemplateError("len takes one argument")
            return str(len(values[0]))
        return text  # print

    def _command(self, tokens: list[_Token], piped: str | None) -> str:
        if not tokens:
            raise TemplateError(f"empty command in {self._source}")
        head = tokens[0]
        if head.kind == "ident":
            if head.text in _KEYWORDS:
                raise TemplateError(
                    f"{{{{{head.text} ...}}}} is not supported in query templates; {SUBSET_HELP}"
                )
            if head.text not in _FUNCTIONS:
                raise TemplateError(f"function {head.text!r} is not supported; {SUBSET_HELP}")
            return self._call(head.text, tokens[1:], piped)
        if head.kind == "var":
            raise TemplateError(f"template variables ({head.text}) are not supported")
        if head.kind == "paren":
            raise TemplateError(f"parenthesised pipelines are not supported; {SUBSET_HELP}")
        if len(tokens) != 1 or piped is not None:
            raise TemplateError(f"cannot apply {head.text} to arguments in {self._source}")
        return self._operand(head)

    def action(self, body: str) -> str:
        if body.lstrip().startswith("$"):
            raise TemplateError(f"template variables ({body.split()[0]}) are not supported")
        tokens = _tokenize(body)
        if not tokens:
            raise TemplateError("empty action {{}}")
        for token in tokens:
            if token.kind == "var":
                raise TemplateError(f"template variables ({token.text}) are not supported")
        commands: list[list[_Token]] = [[]]
        for token in tokens:
            if token.kind == "pipe":
                commands.append([])
            else:
                commands[-1].append(token)
        value: str | None = None
        for command in commands:
            value = self._command(command, value)
        assert value is not None
        return value


def render(template: str, data: Mapping[str, str]) -> str:
    """Render ``template`` with ``data`` (see the module docstring for the subset).

    Raises:
        TemplateError: the template uses something outside the subset, or names a missing
            argument.
    """
    renderer = _Renderer(data, template)
    out: list[str] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        out.append(text)
        body = match.group(2)
        if not body.strip().startswith("/*"):
            out.append(renderer.action(body))
        elif not body.strip().endswith("*/"):
            raise TemplateError("unterminated comment in query template")
        trim_next = bool(match.group(3))
        position = match.end()
    tail = template[position:]
    if "{{" in tail:
        raise TemplateError("unclosed action: '{{' without a matching '}}'")
    out.append(tail.lstrip() if trim_next else tail)
    return "".join(out)
