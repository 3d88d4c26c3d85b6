"""Response bodies, as documented in the OpenAPI schema."""

from __future__ import annotations

from pydantic import BaseModel


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


class Problem(BaseModel):
    error: str
    detail: str
