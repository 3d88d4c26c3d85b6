"""The compiled regular expressions mean exactly what the pyparsing grammars say."""

from __future__ import annotations

import pyparsing as pp
import pytest

from parsers.grammar import GrammarError, compile_grammar
from parsers.postfix import HEADER, grammars
from tests.parsers.samples import load_samples

LINES = [s.line for s in load_samples("postfix")]


def _pyparsing(grammar_element: pp.ParserElement, text: str) -> dict[str, str] | None:
    try:
        result = grammar_element.parse_string(text).as_dict()
    except pp.ParseException:
        return None
    return {k: v for k, v in result.items() if v is not None}


def _regex(match_text: str, grammar_regex: object) -> dict[str, str] | None:
    m = grammar_regex.match(match_text)  # type: ignore[attr-defined]
    return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}


@pytest.mark.parametrize("grammar", grammars(), ids=lambda g: g.name)
def test_compiled_grammar_agrees_with_pyparsing_on_every_sample(grammar: object) -> None:
    matched = 0
    for line in LINES:
        header = HEADER.regex.match(line)
        message = line[header.end() :] if header else line
        expected = _pyparsing(grammar.element, message)  # type: ignore[attr-defined]
        assert _regex(message, grammar.regex) == expected, message  # type: ignore[attr-defined]
        matched += expected is not None
    assert matched, f"no sample line exercises the {grammar} grammar"  # type: ignore[str-bytes-safe]


def test_header_grammar_agrees_with_pyparsing() -> None:
    for line in LINES:
        assert _regex(line, HEADER.regex) == _pyparsing(HEADER.element, line), line


def test_grammar_elements_never_backtrack_like_pyparsing() -> None:
    # pyparsing does not give back what "a+" took to let "ab" match; neither may the regex
    grammar = compile_grammar("greedy", pp.Regex(r"(?P<x>a+)") + pp.Literal("ab"))
    assert grammar.regex.match("aaab") is None
    assert _pyparsing(grammar.element, "aaab") is None


def test_unsupported_constructs_are_refused() -> None:
    with pytest.raises(GrammarError):
        compile_grammar("word", pp.Word(pp.alphas))
    with pytest.raises(GrammarError):
        compile_grammar("flags", pp.Regex("a", flags=2))
