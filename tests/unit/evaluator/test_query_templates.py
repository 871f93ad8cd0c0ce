"""The Go text/template subset used to fill AnalysisValueTemplate queries from ``spec.args``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klt_evaluator.gotemplate import TemplateError, render

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
texts = st.text(max_size=40)


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        pytest.param(
            'rate(http_requests_total{job="{{.job}}"}[{{.window}}])',
            {"job": "cart", "window": "5m"},
            'rate(http_requests_total{job="cart"}[5m])',
            id="keptn-style",
        ),
        pytest.param("{{ .job }}", {"job": "a"}, "a", id="spaces"),
        pytest.param('{{index . "my-arg"}}', {"my-arg": "x"}, "x", id="index"),
        pytest.param("a  {{- .x -}}  b", {"x": "1"}, "a1b", id="trim-markers"),
        pytest.param("a{{/* a comment */}}b", {}, "ab", id="comment"),
        pytest.param('{{"{{"}}literal{{"}"}}}', {}, "{{literal}}", id="literal-braces"),
        pytest.param("{{.q | urlquery}}", {"q": "a b&c"}, "a+b%26c", id="urlquery"),
        pytest.param("{{.q | html}}", {"q": "<a'\">"}, "&lt;a&#39;&#34;&gt;", id="html"),
        pytest.param('{{printf "%s-%s" .app .env}}', {"app": "a", "env": "b"}, "a-b", id="printf"),
        pytest.param('{{printf "%q" .x}}', {"x": "v"}, '"v"', id="printf-q"),
        pytest.param("{{print .a .b}}", {"a": "1", "b": "2"}, "12", id="print"),
        pytest.param("{{.x | len}}", {"x": "four"}, "4", id="len"),
        pytest.param("{{`raw {{`}}", {}, "raw {{", id="raw-string"),
        pytest.param("no actions at all", {}, "no actions at all", id="plain"),
    ],
)
def test_the_supported_subset(template: str, args: dict[str, str], expected: str) -> None:
    assert render(template, args) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.missing}}", "missing argument 'missing' in query template (spec.args has: job)"),
        ("{{if .job}}x{{end}}", "{{if ...}} is not supported"),
        ("{{range .job}}{{end}}", "{{range ...}} is not supported"),
        ("{{$x := .job}}", "template variables"),
        ("{{.job.name}}", "they have no fields"),
        ("{{.}}", "prints the whole argument map"),
        ("{{upper .job}}", "function 'upper' is not supported"),
        ("{{.job", "unclosed action"),
        ('{{printf "%x" .job}}', "printf verb %x is not supported"),
    ],
)
def test_everything_else_is_refused_with_a_reason(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template, {"job": "cart"})
    assert message in str(caught.value)


@given(name=identifiers, value=texts, before=texts, after=texts)
def test_an_argument_is_substituted_verbatim(
    name: str, value: str, before: str, after: str
) -> None:
    before, after = before.replace("{{", ""), after.replace("{{", "")
    # A "{" right before the action would read as part of "{{{"; keep the test about args.
    before = before.rstrip("{")
    assert render(f"{before}{{{{.{name}}}}}{after}", {name: value}) == before + value + after


@given(st.text(max_size=80).filter(lambda t: "{{" not in t))
def test_text_without_actions_is_unchanged(text: str) -> None:
    assert render(text, {}) == text
