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


def test_every_message_of_the_grammar_is_exercised_by_a_sample() -> None:
    seen = {m.lastgroup for line in LINES if (m := LINE.regex.match(line))}
    assert seen == {message.name for message in LINE.messages}


def test_grammar_elements_never_backtrack_like_pyparsing() -> None:
    # pyparsing does not give back what "a+" took so that "ab" can match; neither may the regex
    element = (pp.Regex(r"(?P<x>a+)") + pp.Literal("ab")).leave_whitespace()
    assert re.match(to_regex(element), "aaab") is None
    assert _pyparsing(element, "aaab") is None


def test_unsupported_constructs_are_refused() -> None:
    with pytest.raises(GrammarError):
        to_regex(pp.Word(pp.alphas).leave_whitespace())
    with pytest.raises(GrammarError):
        to_regex(pp.Regex("a", flags=re.IGNORECASE).leave_whitespace())
    with pytest.raises(GrammarError, match="skips whitespace"):
        to_regex(pp.Literal("a") + pp.Literal("b"))
