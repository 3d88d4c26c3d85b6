"""Labels transactions: which side each client and recipient is on, and which are relay attempts.

A client is internal when its address is in ``network.internal_networks``, when it
authenticated, or when the mail was submitted on the host itself.  A recipient is local when
its destination domain (after undoing the classic relay tricks) is in ``local_domains`` or
``relay_domains``, or was seen delivered to a local mailbox.

An outside client asking for an outside recipient is a relay attempt: *accepted* when the
server did not refuse the recipient; *refused* when the server refused it as a relay, in its
own words ("Relay access denied"), whatever the configuration says (the disagreement is counted
for ``check-config``), or without giving a reason (IIS writes only the reply code; OpenSMTPD
says "Invalid recipient" for both).  Other refusals (unknown user, blocklists) are not.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

from detector.config import NetworkSettings
from detector.transactions import (
    ACCEPTED,
    EXTERNAL,
    INTERNAL,
    REFUSED,
    Outcome,
    Recipient,
    Transaction,
    direction,
)
from parsers.postfix import LOCAL_AGENTS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_TRICKS = re.compile(r'[%!":]')  # characters of relay tricks (source routes start "@…:")
_DIRECTIONS = {(c, r): direction(c, r) for c in (INTERNAL, EXTERNAL) for r in (INTERNAL, EXTERNAL)}
EXT_TO_EXT = direction(EXTERNAL, EXTERNAL)


def destination_domain(address: str) -> str:
    """The domain mail to ``address`` would finally go to, undoing relay tricks.

    ``user%outside.example@local``, ``outside.example!user@local``,
    ``@local:user@outside.example`` and ``"user@outside.example"@local`` all go to
    ``outside.example``.
    """
    address = address.strip().lower()
    if _TRICKS.search(address) is None:  # the common case: user@domain
        _, at, domain = address.rpartition("@")
        return domain if at else ""
    if address.startswith("@") and ":" in address:  # source route: @hop1,@hop2:user@domain
        address = address.split(":", 1)[1]
    if address.startswith('"'):
        quoted, _, rest = address[1:].partition('"')
        if "@" in quoted:
            return destination_domain(quoted)
        address = quoted.replace("@", "") + rest
    local_part, at, domain = address.rpartition("@")
    if not at:
        local_part, domain = address, ""
    if "%" in local_part:
        return local_part.rsplit("%", 1)[1]
    if "!" in local_part:
        return local_part.split("!", 1)[0]
    return domain


class Classifier:
    """Classifies transactions against the ``[network]`` settings."""

    def __init__(self, network: NetworkSettings) -> None:
        networks = [ipaddress.ip_network(n) for n in network.internal_networks]
        self._v4 = [n for n in networks if n.version == 4]
        self._v6 = [n for n in networks if n.version == 6]
        domains = {d for d in (*network.local_domains, *network.relay_domains)}
        self._exact = {d for d in domains if not d.startswith(".")}
        self._suffixes = tuple(d for d in domains if d.startswith("."))
        self.delivered_locally: set[str] = set()
        """Domains the logs show delivered to local mailboxes (local even if not configured)."""
        self.mismatches: Counter[str] = Counter()
        """Domains the server refused as a relay although the configuration calls them local."""
        self._internal_ip = lru_cache(maxsize=8192)(self._is_internal_ip)

    def is_internal_ip(self, ip: str) -> bool:
        return self._internal_ip(ip)

    def _is_internal_ip(self, ip: str) -> bool:
        address = _address(ip)
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        networks = self._v4 if address.version == 4 else self._v6
        return any(address in net for net in networks)

    def is_local_domain(self, domain: str) -> bool:
        return (
            domain in self._exact
            or domain in self.delivered_locally
            or domain.endswith(self._suffixes)
            or ("." + domain) in self._suffixes
        )

    def learn(self, transactions: Iterable[Transaction]) -> None:
        """Note the domains these transactions show delivered to local mailboxes."""
        for txn in transactions:
            for rcpt in txn.recipients:
                if _delivered_here(rcpt):
                    domain = rcpt.address.rpartition("@")[2].lower()
                    if domain:
                        self.delivered_locally.add(domain)

    def is_internal(self, txn: Transaction) -> bool:
        """Whether the client is ours: trusted network, authenticated, or the host itself."""
        return bool(
            txn.local_submission
            or txn.sasl_user
            or (txn.client_ip is not None and self._internal_ip(txn.client_ip))
        )

    def may_be_relay_attempt(self, txn: Transaction) -> bool:
        """False when :meth:`classify` cannot find a relay attempt in ``txn``, whatever the
        domains learnt by then: :meth:`_recipient` without its domain test."""
        outside = txn.client_ip is not None and not self.is_internal(txn)
        for rcpt in txn.recipients:
            if rcpt.refused_as_relay or (outside and rcpt.refusal_unexplained):
                return True
            if outside and rcpt.outcome != Outcome.REJECTED and not _delivered_here(rcpt):
                return True
        return False

    def classify(self, txn: Transaction) -> Transaction:
        internal = self.is_internal(txn)
        client_side = INTERNAL if internal else EXTERNAL
        outside_client = not internal and txn.client_ip is not None
        recipients = tuple(
            self._recipient(r, internal, outside_client, client_side) for r in txn.recipients
        )
        sender_local = None
        if txn.sender:
            sender_local = self.is_local_domain(destination_domain(txn.sender))
        return txn.classified(recipients, internal, sender_local)

    def _recipient(
        self, rcpt: Recipient, internal: bool, outside_client: bool, client_side: str
    ) -> Recipient:
        domain = destination_domain(rcpt.address)
        if _delivered_here(rcpt):
            plain = rcpt.address.rpartition("@")[2].lower()  # the server delivered it here
            return rcpt.labelled(plain, _DIRECTIONS[client_side, INTERNAL], None)
        local = self.is_local_domain(domain)
        attempt = None
        if rcpt.refused_as_relay:
            if local or internal:
                self.mismatches[domain if local else "client"] += 1
            return rcpt.labelled(domain, EXT_TO_EXT, REFUSED)
        if outside_client and not local:
            if rcpt.outcome != Outcome.REJECTED:
                attempt = ACCEPTED
            elif rcpt.refusal_unexplained:  # refused, reason not logged, for an outside domain
                attempt = REFUSED
        side = INTERNAL if local else EXTERNAL
        return rcpt.labelled(domain, _DIRECTIONS[client_side, side], attempt)


def _delivered_here(rcpt: Recipient) -> bool:
    """The server delivered it to a mailbox of its own."""
    return rcpt.agent in LOCAL_AGENTS and rcpt.outcome == Outcome.DELIVERED


def _address(ip: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None
