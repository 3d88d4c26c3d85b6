"""``[[sinks]]`` entries: what each type needs, what it may be given, and the sinks made of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from detector.config import load_settings
from detector.errors import ConfigError
from detector.sinks import make_sinks
from detector.sinks.exchange import ExchangeSink
from detector.sinks.exim import EximSink
from detector.sinks.nftables import NftablesSink
from detector.sinks.policy import PolicySink
from detector.sinks.postfix import PostfixCidrSink
from detector.sinks.rbldnsd import RbldnsdSink
from detector.sinks.sendmail import SendmailSink
from detector.sinks.webhook import WebhookSink


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('type = "postfix-cidr"', "sinks[1].path: required for type postfix-cidr"),
        ('type = "sendmail"', "sinks[1].path: required for type sendmail"),
        ('type = "webhook"', "sinks[1].url: required for type webhook"),
        ('type = "webhook"\nurl = "ftp://hooks.example/x"',
         "sinks[1].url: not an http:// or https:// URL: 'ftp://hooks.example/x'"),
        ('type = "exim"\npath = "/x"\nurl = "http://hooks.example/x"',
         "sinks[1].url: not used by type exim"),
        ('type = "postfix-policy"\npath = "/x"', "sinks[1].path: not used by type postfix-policy"),
        ('type = "exim"\npath = "/x"\nnft_table = "filter"',
         "sinks[1].nft_table: not used by type exim"),
        ('type = "webhook"\nurl = "http://h/x"\nreload_command = "true"',
         "sinks[1].reload_command: not used by type webhook"),
        ('type = "postfix-cidr"\npath = "/x"\nreload_command = "postfix \'reload"',
         "sinks[1].reload_command: not a command line (No closing quotation)"),
        ('type = "sendmail"\npath = "/x"\nmakemap_command = " "',
         "sinks[1].makemap_command: empty command"),
        ('type = "nftables"\npath = "/x"\nnft_set = "relay-abusers"',
         "sinks[1].nft_set: not an nftables name"),
        ('type = "webhook"\nurl = "http://h/x"\ntries = 0', "sinks[1].tries:"),
        ('type = "webhook"\nurl = "http://h/x"\ntimeout = "soon"',
         "sinks[1].timeout: invalid duration"),
        ('type = "exim"\npath = "/x"\npaht = "/y"', "sinks[1].paht: unknown key"),
    ],
)  # fmt: skip
def test_a_sink_entry_that_does_not_fit_its_type_is_a_clear_error(
    write_config: Callable[..., Path], entry: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(f"[[sinks]]\n{entry}\n"), environ={})
    assert message in str(caught.value)


def test_the_second_entry_is_named_by_its_position(write_config: Callable[..., Path]) -> None:
    text = '[[sinks]]\ntype = "exim"\npath = "/x"\n[[sinks]]\ntype = "rbldnsd"\n'
    with pytest.raises(ConfigError, match=r"sinks\[2\]\.path: required for type rbldnsd"):
        load_settings(write_config(text), environ={})


def test_make_sinks_builds_one_sink_per_entry_in_order(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    text = "".join(
        f'[[sinks]]\ntype = "{kind}"\n{where}\n'
        for kind, where in [
            ("postfix-cidr", f'path = "{tmp_path}/relaywatch.cidr"'),
            ("postfix-policy", 'listen = "127.0.0.1:0"'),
            ("exim", f'path = "{tmp_path}/exim"'),
            ("sendmail", f'path = "{tmp_path}/access"'),
            ("exchange", f'path = "{tmp_path}/relaywatch.ps1"'),
            ("nftables", f'path = "{tmp_path}/relaywatch.nft"'),
            ("rbldnsd", f'path = "{tmp_path}/relaywatch.ip4set"'),
            ("webhook", 'url = "http://127.0.0.1:9/hook"'),
        ]
    )
    sinks = make_sinks(load_settings(write_config(text), environ={}))
    try:
        assert [type(s) for s in sinks] == [
            PostfixCidrSink, PolicySink, EximSink, SendmailSink, ExchangeSink, NftablesSink,
            RbldnsdSink, WebhookSink,
        ]  # fmt: skip
        assert sinks[0].name == f"postfix-cidr {tmp_path}/relaywatch.cidr"
        assert sinks[4].name == f"exchange {tmp_path}/relaywatch.ps1"
        assert sinks[7].name == "webhook http://127.0.0.1:9/hook"
    finally:
        for sink in sinks:
            sink.close()
