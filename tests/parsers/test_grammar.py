"""The compiled regular expression means exactly what the pyparsing grammar says."""

from __future__ import annotations

import re

import pyparsing as pp
import pytest

from parsers.grammar import GrammarError, to_regex
from parsers.postfix import LINE
from tests.parsers.samples import load_samples

LINES = [s.line for s in load_samples("postfix")]


def _pyparsing(element: pp.ParserElement, text: str) -> dict[str, str] | None:
    try:
        result = element.parse_string(text).as_dict()
    except pp.ParseException:
        return None
    return {k: v for k, v in result.items() if v is not None}


@pytest.mark.parametrize("line", LINES)
def test_compiled_line_grammar_agrees_with_pyparsing(line: str) -> None:
    match = LINE.regex.match(line)
    expected = LINE.parse_fields(line)
    assert (None if match is None else LINE.fields(match)) == expected


def test_grammar_elements_never_backtrack_like_pyparsing() -> None:
    # pyparsing does not give back what "a+" took so that "ab" can match; neither may the regex
    element = (pp.Regex(r"(?P<x>a+)") + pp.Literal("ab")).leave_whitespace()
    assert re.match(to_regex(element), "aaab") is None
    assert _pyparsing(element, "aaab") is None


@pytest.mark.parametrize(
    ("pattern", "after", "text"),
    [
        (r"(?P<x>a*)", "a", "aaa"),  # one class repeated: made possessive
        (r"[a-z][a-z0-9]{2,}", "2", "ab12"),  # greedy inside: kept in an atomic group
        (r"a|ab", "b", "abb"),  # alternatives: the first that matches, never another
        (r"(?:ab)?", "ab", "ab"),
    ],
)
def test_regex_elements_commit_to_their_first_match(pattern: str, after: str, text: str) -> None:
    # a backtracking regex would match each text whole; pyparsing does not, nor may we
    element = (pp.Regex(pattern) + pp.Literal(after) + pp.StringEnd()).leave_whitespace()
    assert _pyparsing(element, text) is None
    assert re.match(to_regex(element), text) is None
    assert re.match(f"(?:{pattern}){re.escape(after)}\\Z", text) is not None


def test_only_regexes_that_could_give_back_are_wrapped_in_atomic_groups() -> None:
    def wrapped(pattern: str) -> bool:
        return to_regex(pp.Regex(pattern).leave_whitespace()).startswith("(?>")

    assert not wrapped(r"[^>]*")  # becomes [^>]*+
    assert not wrapped(r"(?P<id>[0-9A-Z][0-9A-Za-z]{4,}+)")
    assert not wrapped(r"\d\d\d\d-x{3}")
    assert wrapped(r"[0-9A-Z][0-9A-Za-z]{4,}")
    assert wrapped(r"a|bc")
    assert wrapped(r"(?:a|bc)x")
    assert wrapped(r"a*?b")


def test_unsupported_constructs_are_refused() -> None:
    with pytest.raises(GrammarError):
        to_regex(pp.Word(pp.alphas).leave_whitespace())
    with pytest.raises(GrammarError):
        to_regex(pp.Regex("a", flags=re.IGNORECASE).leave_whitespace())
    with pytest.raises(GrammarError, match="skips whitespace"):
        to_regex(pp.Literal("a") + pp.Literal("b"))
