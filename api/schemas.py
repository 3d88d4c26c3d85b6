"""Request and response bodies, as documented in the OpenAPI schema."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field, field_validator

from detector.config import format_duration, parse_duration


class OffenderOut(BaseModel):
    ip: str
    score: float
    relay_attempts: int
    refused_relays: int
    accepted_relays: int
    recipients: int
    recipient_domains: int
    first_seen: str
    last_seen: str
    blocked: bool
    blocked_until: str | None
    reasons: list[str]


class OffenderList(BaseModel):
    offenders: list[OffenderOut]
    next_cursor: str | None = None


class RecipientOut(BaseModel):
    address: str
    orig_address: str | None
    domain: str | None
    direction: str
    outcome: str
    relay_attempt: str | None
    code: int | None
    enhanced: str | None
    reason: str | None
    next_hop: str | None


class TransactionOut(BaseModel):
    id: int
    host: str
    queue_id: str | None
    started_at: str
    ended_at: str
    client_ip: str | None
    client_name: str | None
    helo: str | None
    sasl_user: str | None
    sender: str | None
    message_id: str | None
    size: int | None
    internal: bool
    reject_reason: str | None
    refused_relays: int
    accepted_relays: int
    recipients: list[RecipientOut]


class EvidenceOut(TransactionOut):
    lines: list[str]


class DecisionOut(BaseModel):
    id: int
    value: str
    scope: str
    origin: str
    reason: str
    created_at: str
    expires_at: str
    revoked_at: str | None
    active: bool
    hits: int  # refusals because of it that the mail servers logged
    last_hit_at: str | None
    policy_rejects: int  # requests the Postfix policy service refused because of it


class OffenderDetail(OffenderOut):
    decisions: list[DecisionOut]
    transactions: list[EvidenceOut]


class TransactionPage(BaseModel):
    transactions: list[TransactionOut]
    next_cursor: str | None


class Health(BaseModel):
    status: str
    database: str
    sources: list[dict[str, object]]
    sinks: list[dict[str, object]] = []  # each sink's last sync: ok, entries, message


class Problem(BaseModel):
    error: str
    detail: str


# enforcement: manual decisions, the allowlist, the CrowdSec-compatible bouncer API

_ONE_LINE = r"^[^\x00-\x1f\x7f]*$"  # reasons and comments end up in map files and logs
MAX_MANUAL_BLOCK = timedelta(days=3650)
"""The longest manual block: a permanent one belongs in the mail server's own configuration."""


class BlockRequest(BaseModel):
    value: str = Field(
        min_length=1, max_length=64, description="an IP address or a CIDR range",
        examples=["203.0.113.7", "198.51.100.0/24"],
    )  # fmt: skip
    duration: str | None = Field(
        default=None, description="30m, 1h, 7d …; [scoring] block_duration when left out",
        examples=["1h"],
    )  # fmt: skip
    reason: str = Field(default="", max_length=500, pattern=_ONE_LINE)

    @field_validator("duration")
    @classmethod
    def _a_duration(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            length = parse_duration(value)
        except OverflowError:
            length = MAX_MANUAL_BLOCK * 2
        if length > MAX_MANUAL_BLOCK:
            longest = format_duration(MAX_MANUAL_BLOCK)
            raise ValueError(f"duration {value!r} is longer than {longest}")
        return value


class AllowRequest(BaseModel):
    network: str = Field(
        min_length=1, max_length=64, description="an IP address or a CIDR range",
        examples=["198.51.100.0/24"],
    )  # fmt: skip
    comment: str = Field(default="", max_length=500, pattern=_ONE_LINE)


class AllowEntryOut(BaseModel):
    id: int
    network: str
    comment: str
    created_at: str


class AllowResult(AllowEntryOut):
    revoked_decisions: list[int]  # ids of the blocks in force that the entry lifted


class AllowList(BaseModel):
    allowlist: list[AllowEntryOut]


class CrowdSecDecision(BaseModel):
    """A decision as CrowdSec's Local API shows it to bouncers (its swagger ``Decision``)."""

    id: int
    origin: str
    type: str
    scope: str
    value: str
    duration: str
    scenario: str
    until: str
    uuid: str
    simulated: bool


class CrowdSecStream(BaseModel):
    new: list[CrowdSecDecision] | None
    deleted: list[CrowdSecDecision] | None


# the nightly tracking reports


class ReportOut(BaseModel):
    """A stored report: which, when built, its headline numbers, how mailing it went."""

    day: str = Field(description="the local day it covers (its label)", examples=["2026-12-01"])
    host: str = Field(description='the relay host it covers; "" for all of them')
    created_at: str
    open_relay: bool = Field(description="an outside client's relay was accepted that day")
    accepted_relays: int
    refused_relays: int
    relay_attempts: int
    offenders: int
    new_blocks: int
    mailed_at: str | None = Field(description="when the SMTP server took it; null: not mailed")
    mail_error: str | None = Field(
        description="why it is not mailed (yet), or recipients the server refused"
    )
    url: str = Field(description="where to read it", examples=["/v1/reports/2026-12-01"])


class ReportList(BaseModel):
    reports: list[ReportOut]
