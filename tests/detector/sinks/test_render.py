"""The blocklist formats of ``GET /v1/blocklist``: the same renderers the sinks write with."""

from __future__ import annotations

import json

import pytest

from detector.decide import refusal_text
from detector.errors import InputError
from detector.sinks import BLOCKLIST_FORMATS, render
from tests.detector.sinks.factories import NOW, decision, expired

TEXT_FORMATS = ["postfix", "exim", "sendmail", "rbldnsd", "exchange-ps", "ims"]


def test_the_formats_are_the_ones_the_http_contract_names() -> None:
    assert set(BLOCKLIST_FORMATS) == {
        "json", "text", "postfix", "exim", "sendmail", "nft", "rbldnsd", "exchange-ps", "ims",
    }  # fmt: skip


def test_json_lists_every_decision_in_force_with_utc_times() -> None:
    decisions = [decision(12, "203.0.113.7"), decision(18, "mallory", scope="user")]
    assert json.loads(render("json", decisions, NOW)) == [
        {"id": 12, "value": "203.0.113.7", "scope": "ip", "origin": "auto",
         "reason": "9 refused relay attempts in 10m", "created_at": "2026-12-02T08:55:00Z",
         "expires_at": "2026-12-02T10:00:00Z"},
        {"id": 18, "value": "mallory", "scope": "user", "origin": "auto",
         "reason": "9 refused relay attempts in 10m", "created_at": "2026-12-02T08:55:00Z",
         "expires_at": "2026-12-02T10:00:00Z"},
    ]  # fmt: skip


def test_text_is_one_address_or_range_a_line_without_users() -> None:
    decisions = [
        decision(1, "198.51.100.0/24"), decision(2, "2001:db8::5"), decision(3, "203.0.113.7"),
        decision(4, "mallory", scope="user"),
    ]  # fmt: skip
    assert render("text", decisions, NOW) == "203.0.113.7\n198.51.100.0/24\n2001:db8::5\n"


@pytest.mark.parametrize("fmt", BLOCKLIST_FORMATS)
def test_an_expired_or_revoked_decision_is_not_rendered(fmt: str) -> None:
    decisions = [expired(41, "203.0.113.41"), decision(42, "203.0.113.42", revoked=True)]
    out = render(fmt, decisions, NOW)
    assert "203.0.113.41" not in out and "203.0.113.42" not in out
    assert render(fmt, [*decisions, decision(43, "203.0.113.43")], NOW) != out


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_every_refusal_carries_the_decision_text(fmt: str) -> None:
    blocked = [decision(12, "203.0.113.7"), decision(14, "198.51.100.0/24", hours=3)]
    out = render(fmt, blocked, NOW)
    for d in blocked:
        assert refusal_text(d) in out


def test_a_value_that_is_not_an_address_is_left_out() -> None:
    out = render("postfix", [decision(5, "not-an-ip", scope="ip"), decision(6, "192.0.2.6")], NOW)
    assert "not-an-ip" not in out and "192.0.2.6  REJECT" in out


def test_two_decisions_on_one_value_render_the_one_that_ends_last() -> None:
    decisions = [decision(7, "192.0.2.7", hours=1), decision(8, "192.0.2.7", hours=4)]
    out = render("postfix", decisions, NOW)
    assert "decision 8" in out and "decision 7" not in out


def test_an_unknown_format_is_an_input_error_naming_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown blocklist format 'xml' .*json, text, postfix"):
        render("xml", [], NOW)
