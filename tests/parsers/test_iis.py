"""IIS SMTP W3C extended (and NCSA) logs: the compiled grammars mean what the pyparsing ones
say, the header's columns are state, hostile input, and other families' lines."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from parsers.events import Kind
from parsers.grammar import LineGrammar
from parsers.iis import HEADER_DATE, HEADER_LINE, NCSA, IisW3cParser, row_grammar
from tests.parsers.samples import load_file, load_samples, sample_files

KIB64 = 64 * 1024
FIELDS_50 = (
    "#Fields: date time c-ip cs-username s-sitename s-computername s-ip s-port cs-method "
    "cs-uri-stem cs-uri-query sc-status sc-win32-status sc-bytes cs-bytes time-taken cs-version "
    "cs-host cs(User-Agent) cs(Cookie) cs(Referer)"
)
HEADER = ["#Software: Microsoft Internet Information Services 5.0", "#Version: 1.0",
          "#Date: 2026-11-30 09:00:00", FIELDS_50]  # fmt: skip
ROW = "2026-11-30 09:00:01 203.0.113.50 {helo} SMTPSVC1 MX1 192.0.2.25 0 {verb} - {query} {code} "
ROW_END = "0 44 10 0 SMTP - - - -"


def row(verb: str, query: str, code: int = 250, helo: str = "spambot") -> str:
    return ROW.format(helo=helo, verb=verb, query=query, code=code) + ROW_END


def reading(*lines: str) -> IisW3cParser:
    parser = IisW3cParser()
    for line in lines:
        parser.parse(line)
    return parser


def _grammar_cases() -> list[tuple[str, LineGrammar, str]]:
    """Every sample line with each grammar it is read by (the rows under the layout in force)."""
    cases = []
    for path in sample_files("iis-w3c"):
        columns: tuple[str, ...] | None = None
        for sample in load_file(path):
            line = sample.line
            if line.startswith("#"):
                cases.append((f"{sample.id}:header", HEADER_LINE, line))
                m = HEADER_LINE.regex.match(line)
                if m is not None and m["stage"] == "Date":
                    cases.append((f"{sample.id}:date", HEADER_DATE, m["reason"]))
                elif m is not None and m["stage"] == "Fields":
                    columns = tuple(m["reason"].split())
                continue
            if columns is not None:
                cases.append((f"{sample.id}:row", row_grammar(columns), line))
            cases.append((f"{sample.id}:ncsa", NCSA, line))
    return cases


CASES = _grammar_cases()


@pytest.mark.parametrize(("grammar", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compiled_grammar_agrees_with_pyparsing(grammar: LineGrammar, text: str) -> None:
    match = grammar.regex.match(text)
    assert (None if match is None else grammar.fields(match)) == grammar.parse_fields(text)


def test_rows_before_a_header_of_their_own_give_nothing() -> None:
    parser = IisW3cParser()
    assert parser.parse(row("RCPT", "+TO:<v@outside.example>", 550)) is None
    for line in HEADER:
        assert parser.parse(line) is not None
    event = parser.parse(row("RCPT", "+TO:<v@outside.example>", 550))
    assert event is not None and event.refusal_unexplained


def test_a_new_fields_line_changes_the_columns() -> None:
    parser = reading(*HEADER, "#Fields: time c-ip cs-method cs-uri-query sc-status")
    assert parser.parse(row("HELO", "+x")) is None  # the old layout's rows no longer fit
    event = parser.parse("09:30:00 203.0.113.50 RCPT +TO:<v@outside.example> 550")
    assert event is not None
    assert datetime.fromtimestamp(event.time, UTC) == datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    assert (event.client_ip, event.recipient, event.code) == (
        "203.0.113.50",
        "v@outside.example",
        550,
    )


def test_a_fields_line_of_another_log_is_not_taken_as_a_layout() -> None:
    exchange = "#Fields: date-time,client-ip,client-hostname,server-ip,event-id,sender-address"
    parser = reading(*HEADER)
    assert parser.parse(exchange) is None
    assert parser.parse("2026-11-30T09:00:00.000Z,192.0.2.1,h,192.0.2.25,RECEIVE,a@b") is None
    assert parser.parse(row("HELO", "+x")) is None  # the IIS layout is gone too


def test_the_columns_survive_a_restart_as_json_state() -> None:
    parser = reading(*HEADER)
    restored = IisW3cParser()
    restored.restore(json.loads(json.dumps(parser.state())))
    line = row("MAIL", "+FROM:<a@forged.example>")
    assert restored.parse(line) == parser.parse(line)
    restored.restore(None)
    assert restored.parse(line) is None


def test_rows_with_time_only_take_the_day_of_the_date_header_and_pass_midnight() -> None:
    parser = reading("#Date: 2026-11-30 23:59:00", "#Fields: time c-ip cs-method sc-status")
    late, early = (
        parser.parse("23:59:59 192.0.2.1 HELO 250"),
        parser.parse("00:00:01 192.0.2.1 QUIT 240"),
    )
    assert late is not None and early is not None
    assert early.time - late.time == 2


def test_branch_changes_no_state() -> None:
    parser = reading(*HEADER)
    assert parser.branch("#Fields: time c-ip cs-method sc-status") == "fields"
    assert parser.branch(row("HELO", "+x")) == "helo"  # still the header's layout


def test_a_client_named_like_iis_outbound_rows_stays_the_client() -> None:
    parser = reading(*HEADER)
    for verb, query in (("MAIL", "+FROM:<a@b.example>"), ("RCPT", "+TO:<v@outside.example>")):
        event = parser.parse(row(verb, query, helo="OutboundConnectionCommand"))
        assert event is not None and event.kind == Kind.COMMAND
        assert event.client_ip == "203.0.113.50" and event.relay is None


def test_injected_addresses_never_become_the_client() -> None:
    parser = IisW3cParser()
    hostile = [s for s in load_samples("iis-w3c") if s.path.name == "hostile.log"]
    assert len(hostile) >= 15
    for sample in hostile:
        event = parser.parse(sample.line)
        if event is not None and event.kind != Kind.HEADER:
            assert event.client_ip in ("203.0.113.50", "2001:db8::50"), sample.line
            assert event.relay is None, sample.line


def _pad(pattern: str, size: int = KIB64) -> str:
    return (pattern * (size // len(pattern) + 1))[:size]


PREFIXES = {
    "query": "2026-11-30 09:00:01 203.0.113.50 x SMTPSVC1 MX1 192.0.2.25 0 RCPT - +TO:<",
    "helo": "2026-11-30 09:00:01 203.0.113.50 ",
    "row start": "",
    "ncsa": '203.0.113.50 - x [30/Nov/2026:09:02:00 +0000] "RCPT -?+TO:<',
    "ncsa helo": "203.0.113.50 - ",
    "fields": "#Fields: ",
    "date": "#Date: 2026-11-30 ",
    "directive": "#Remark:",
}
FILLERS = [" ", "+", "<", ">", ":", "-", "+FROM:<", "+TO:<a@b>", "[", "]", '"', "?", ' SMTP" ',
           "0", "a", " 250 0", "\t", "\ufffd"]  # fmt: skip


@pytest.mark.parametrize("prefix", list(PREFIXES))
def test_64kib_hostile_lines_parse_in_under_10_ms(prefix: str) -> None:
    worst = 0.0
    for filler in FILLERS:
        for suffix in ("", " 250 0 44 10 0 SMTP - - - -", ' SMTP" 250 46'):
            line = PREFIXES[prefix] + _pad(filler) + suffix
            took = []
            for _ in range(3):  # the best of three: a garbage collection can land in any one
                parser = reading(*HEADER)
                start = time.perf_counter()
                event = parser.parse(line)
                took.append(time.perf_counter() - start)
                if event is not None and event.kind != Kind.HEADER:
                    assert event.client_ip == "203.0.113.50"
            worst = max(worst, min(took))
    assert worst < 0.010, f"slowest hostile line took {worst * 1000:.1f} ms"


def test_broken_utf8_is_read_or_skipped_without_error() -> None:
    parser = reading(*HEADER)
    bad = "\ufffd\ufffd"
    lines = [row("HELO", f"+{bad}", helo=bad), row("MAIL", f"+FROM:<{bad}@x>"),
             row(f"RC{bad}", "+TO:<v@outside.example>"), f"#Fie{bad}lds: date time",
             f'203.0.113.50 - {bad} [30/Nov/2026:09:02:00 +0000] "HELO -?+{bad} SMTP" 250 46',
             row("HELO", "+x").replace("2026-11-30", f"2026-11-3{bad}")]  # fmt: skip
    events = [parser.parse(line) for line in lines]
    assert [e.helo for e in events[:1] if e is not None] == [bad]
    assert all(e.client_ip == "203.0.113.50" for e in events if e is not None)
    assert events[-1] is None


def test_postfix_lines_are_not_iis_lines() -> None:
    postfix = [s.line for s in load_samples("postfix")]
    assert len(postfix) > 100
    for parser in (IisW3cParser(), reading(*HEADER),
                   reading("#Date: 2026-11-30 00:00:00", "#Fields: c-ip cs-method")):  # fmt: skip
        assert [line for line in postfix if parser.parse(line) is not None] == []
