"""``check-config``: the configuration against what the stored logs show."""

from __future__ import annotations

from sqlalchemy import func, select

from detector.classify import Classifier
from detector.config import Settings
from detector.errors import RelaywatchError
from detector.store.models import RecipientRow
from detector.store.session import open_database
from detector.transactions import REFUSED
from parsers.postfix import LOCAL_AGENTS


def configuration_report(settings: Settings) -> tuple[list[str], int]:
    """Lines to print and the number of problems (warnings are not problems)."""
    lines = ["configuration is valid"]
    problems = 0
    network = settings.network
    lines.append(f"internal networks: {', '.join(network.internal_networks) or 'none'}")
    lines.append(f"local domains: {', '.join(network.local_domains) or 'none'}")
    if network.relay_domains:
        lines.append(f"relay domains: {', '.join(network.relay_domains)}")
    if not network.local_domains and not network.relay_domains:
        lines.append(
            "warning: no local_domains: only domains seen delivered locally count as local"
        )
    for source in settings.sources:
        state = "exists" if source.path.exists() else "does not exist yet"
        lines.append(f"source {source.path} ({source.format}, host {source.host}): {state}")
    try:
        engine = open_database(settings.database.url)
    except RelaywatchError as exc:
        return [*lines, f"problem: {exc}"], problems + 1
    lines.append(f"database: {engine.url.render_as_string(hide_password=True)} (schema up to date)")
    classifier = Classifier(network)
    with engine.connect() as connection:
        refused_local = connection.execute(
            select(RecipientRow.domain, func.count())
            .where(RecipientRow.relay_attempt == REFUSED, RecipientRow.domain.is_not(None))
            .group_by(RecipientRow.domain)
        ).all()
        delivered = connection.execute(
            select(RecipientRow.domain, func.count())
            .where(RecipientRow.agent.in_(LOCAL_AGENTS), RecipientRow.outcome == "delivered")
            .group_by(RecipientRow.domain)
        ).all()
    for domain, count in refused_local:
        if domain and classifier.is_local_domain(domain):
            lines.append(
                f"warning: {domain} is configured as local, but the server refused {count} "
                "recipients there as relaying: it does not accept mail for it"
            )
    for domain, count in delivered:
        if domain and not classifier.is_local_domain(domain):
            lines.append(
                f"warning: {domain} is not in local_domains, but {count} recipients there were "
                "delivered locally: add it to network.local_domains"
            )
    engine.dispose()
    return lines, problems
