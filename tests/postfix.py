"""A private, real Postfix instance for end-to-end tests, and the fixtures that start it.

Tested with Postfix 3.7.11 (Debian 12 package ``postfix``), run as root: ``postfix -c DIR``
reads the instance's own main.cf and master.cf, so no ``multi_instance`` setting is needed,
and each instance has its own queue, data and pid files (nothing under /var/spool/postfix).

main.cf, and why:
  queue_directory, data_directory,   all in the instance's directory, so instances never share
  maillog_file = <root>/...          a master lock, a pid file, a socket or a log
  maillog_file_prefixes = <root>     Postfix refuses a maillog_file outside them (default /var)
  compatibility_level = 3.6          no backwards-compatibility warnings in the log
  myhostname = mx.relaywatch.test    the log's host field is "mx" whatever the machine is called
  inet_interfaces = 127.0.0.1        with master.cf's "127.0.0.1:PORT inet n - n - - smtpd"
  inet_protocols = ipv4
  mynetworks = 127.0.0.1/32          the one internal client; 127.0.0.2-254 are outside clients
  mydestination = local.test         the local domain; with local_recipient_maps and alias_maps
  local_recipient_maps =             empty, any user@local.test is accepted (no unix account)
  local_transport, default_transport,
  relay_transport = discard:         every accepted message is discarded: nothing leaves
  smtpd_peername_lookup = no         no DNS (there is no network): clients are "unknown[IP]"
  biff = no                          no comsat notifications
  smtpd_relay_restrictions = permit_mynetworks, [policy,] reject_unauth_destination
                                     554 5.7.1 for a refused relay (the default would be 454)
  smtpd_client_restrictions = check_client_access cidr:<root>/etc/relaywatch.cidr [, policy]
  smtpd_delay_reject = yes|no        yes (the default): client restrictions act at RCPT;
                                     no: at CONNECT, the greeting itself is the 554
  policy = check_policy_service { inet:127.0.0.1:PORT, timeout=2s, default_action=DUNNO }
           (before reject_unauth_destination only because the test policies never answer OK)

A cidr: table is read when an smtpd process starts and a reused smtpd keeps the old one, so a
sink that rewrites it must run ``reload_command`` (``postfix -c <config_directory> reload``).
That command returns (in about 0.03 s) before the old smtpd processes have gone, and one of
them may take a client connecting in that moment (a test failed so 3 times in about 25 runs
here), so ``reload()`` waits until they have exited (0.04-0.06 s in all, here).

Log lines observed in maillog_file (relaywatch must recognise each; the format has no year, and
no DNS means "unknown[IP]"). start() greets once from 127.0.0.1: a connect and a disconnect.
  refused relay:
    Dec 02 01:03:43 mx postfix/smtpd[27099]: NOQUEUE: reject: RCPT from unknown[127.0.0.5]:
    554 5.7.1 <x@outside.test>: Relay access denied; from=<spammer@outside.test>
    to=<x@outside.test> proto=ESMTP helo=<client.outside.test>
  cidr table REJECT (smtpd_client_restrictions, rejects delayed to RCPT), once per recipient:
    Dec 02 01:03:08 mx postfix/smtpd[23762]: NOQUEUE: reject: RCPT from unknown[127.0.0.5]:
    554 5.7.1 <unknown[127.0.0.5]>: Client host rejected: relaywatch decision 7: relay abuse,
    blocked until 2026-12-02T10:00:00Z; from=<spammer@outside.test> to=<x@outside.test>
    proto=ESMTP helo=<client.outside.test>
  policy REJECT in smtpd_relay_restrictions (asked at RCPT, the reply names the recipient):
    Dec 02 01:03:37 mx postfix/smtpd[26464]: NOQUEUE: reject: RCPT from unknown[127.0.0.5]:
    554 5.7.1 <x@outside.test>: Recipient address rejected: relaywatch decision 9: relay abuse,
    blocked until 2026-12-02T11:00:00Z; from=<spammer@outside.test> to=<x@outside.test>
    proto=ESMTP helo=<client.outside.test>
  policy REJECT in smtpd_client_restrictions: at RCPT the same as the cidr line ("Client host
  rejected", decision 9); with smtpd_delay_reject = no, at CONNECT (the greeting is the 554):
    Dec 02 01:03:43 mx postfix/smtpd[27300]: NOQUEUE: reject: CONNECT from unknown[127.0.0.5]:
    554 5.7.1 <unknown[127.0.0.5]>: Client host rejected: relaywatch decision 9: relay abuse,
    blocked until 2026-12-02T11:00:00Z; proto=SMTP
(each is one line in the log, wrapped here.)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import pytest

from tests.net import free_port
from tests.required import require

POSTFIX_MISSING = "Postfix not installed: apt-get install postfix"
NOT_ROOT = "Postfix tests need root: the master runs as root and drops to the postfix user"
# root's PATH has them; another user's may not, and Debian installs them there
SBIN = ["/usr/sbin", "/sbin"]
SMTP_HOST = "127.0.0.1"
COMMAND_TIMEOUT = 30.0

PolicyStage = Literal["relay", "client"]


def find_command(name: str, search_path: str | None = None) -> str | None:
    """``name`` on ``search_path`` (default: PATH, then /usr/sbin and /sbin)."""
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which(name, path=search_path)


def postfix_unavailable(search_path: str | None = None) -> str | None:
    """Why a real Postfix cannot be started here, or None when it can."""
    if any(find_command(name, search_path) is None for name in ("postfix", "postconf")):
        return POSTFIX_MISSING
    if os.geteuid() != 0:
        return NOT_ROOT
    return None


def require_postfix(
    environ: Mapping[str, str] = os.environ, search_path: str | None = None
) -> None:
    """Skip with the reason when Postfix cannot run; fail instead under
    ``RELAYWATCH_REQUIRE_POSTFIX=1`` (CI, where a skip would hide the end-to-end tests)."""
    require(postfix_unavailable(search_path), "RELAYWATCH_REQUIRE_POSTFIX", environ)


class PostfixError(RuntimeError):
    """A postfix command failed; the message carries its output and the new log lines
    (Postfix writes its errors to maillog_file, not to stderr)."""


@dataclass(frozen=True)
class Restrictions:
    """Which relaywatch-managed restrictions the instance enforces.

    ``policy_service`` is ``HOST:PORT`` of a policy delegation server; ``policy_stage`` puts it
    in smtpd_relay_restrictions (asked per recipient) or smtpd_client_restrictions (asked per
    client: at RCPT with ``delay_reject``, at CONNECT without)."""

    cidr_table: bool = True
    policy_service: str | None = None
    policy_stage: PolicyStage = "relay"
    delay_reject: bool = True


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: code and text (lines joined by newlines)."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class SmtpResult:
    """What one SMTP session got: each stage's reply, None for a stage never reached.

    ``greeting`` is None when the connection itself failed (``error`` says why); a 554
    greeting is the client refused at CONNECT."""

    greeting: Reply | None
    helo: Reply | None = None
    mail_from: Reply | None = None
    recipients: Mapping[str, Reply] = field(default_factory=dict)
    data: Reply | None = None
    error: str | None = None

    @property
    def connected(self) -> bool:
        return self.greeting is not None

    @property
    def data_accepted(self) -> bool:
        return self.data is not None and self.data.code == 250


def _reply(code: int, message: bytes | str) -> Reply:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return Reply(code, text)


def _message(sender: str, recipients: Sequence[str]) -> str:
    return (
        f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        "Subject: relaywatch test\r\n\r\nA test message; the instance discards it.\r\n"
    )


class PostfixInstance:
    """One private Postfix: config, queue, data directory and log under ``root``, smtpd on
    127.0.0.1:``port``. ``root`` and its parents must be searchable by the postfix user (the
    master opens its lock file in data_directory as that user), which pytest's tmp_path is not."""

    def __init__(self, root: Path, port: int, restrictions: Restrictions | None = None) -> None:
        postfix, postconf = find_command("postfix"), find_command("postconf")
        if postfix is None or postconf is None:
            raise PostfixError(POSTFIX_MISSING)
        self._postfix, self._postconf = postfix, postconf
        self.root = root
        self.port = port
        self.restrictions = restrictions = restrictions or Restrictions()
        self.config_directory = root / "etc"
        self.queue_directory = root / "spool"
        self.data_directory = root / "data"
        self.maillog_file = root / "maillog"
        self.cidr_table: Path | None = (
            self.config_directory / "relaywatch.cidr" if restrictions.cidr_table else None
        )

    # -- configuration ----------------------------------------------------------------------

    @property
    def reload_command(self) -> str:
        """What a sink runs after rewriting the cidr table, as one shell-safe string."""
        return shlex.join([self._postfix, "-c", str(self.config_directory), "reload"])

    @property
    def policy_check(self) -> str | None:
        service = self.restrictions.policy_service
        if service is None:
            return None
        return f"check_policy_service {{ inet:{service}, timeout=2s, default_action=DUNNO }}"

    def main_cf(self) -> str:
        client = []
        if self.cidr_table is not None:
            client.append(f"check_client_access cidr:{self.cidr_table}")
        relay = ["permit_mynetworks", "reject_unauth_destination"]
        if self.policy_check is not None:
            if self.restrictions.policy_stage == "client":
                client.append(self.policy_check)
            else:
                relay.insert(1, self.policy_check)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_directory),
            "data_directory": str(self.data_directory),
            "maillog_file": str(self.maillog_file),
            "maillog_file_prefixes": str(self.root),
            "myhostname": "mx.relaywatch.test",
            "inet_interfaces": SMTP_HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.1/32",
            "mydestination": "local.test",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "local_transport": "discard:",
            "default_transport": "discard:",
            "relay_transport": "discard:",
            "biff": "no",
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_delay_reject": "yes" if self.restrictions.delay_reject else "no",
            "smtpd_client_restrictions": ", ".join(client),
            "smtpd_relay_restrictions": ", ".join(relay),
        }
        return "".join(f"{name} = {value}\n" for name, value in settings.items())

    def master_cf(self) -> str:
        # the stock services mail acceptance and discard need, and nothing listening but smtpd
        services = [
            f"{SMTP_HOST}:{self.port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "".join(f"{line}\n" for line in services)

    def write_config(self) -> None:
        # ``postfix check`` creates the rest of the queue, and data_directory owned by postfix
        for directory in (self.config_directory, self.queue_directory):
            directory.mkdir(parents=True, exist_ok=True)
        past = time.time() - 60
        for name, text in (("main.cf", self.main_cf()), ("master.cf", self.master_cf())):
            path = self.config_directory / name
            path.write_text(text)
            # Postfix waits until a config file is over a second old (it may be half-written)
            os.utime(path, (past, past))
        if self.cidr_table is not None and not self.cidr_table.exists():
            self.cidr_table.write_text("")

    # -- control ----------------------------------------------------------------------------

    def _log_size(self) -> int:
        try:
            return self.maillog_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.maillog_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _run(self, *args: str) -> None:
        offset = self._log_size()
        command = [self._postfix, "-c", str(self.config_directory), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            raise PostfixError(
                f"{shlex.join(command)} failed (exit {done.returncode})\n"
                f"{done.stdout}{done.stderr}{self._log_since(offset)}".rstrip()
            )

    def running(self) -> bool:
        """Whether this instance's master holds its lock (``master -t``; a zombie does not)."""
        daemon_directory = subprocess.run(
            [self._postconf, "-c", str(self.config_directory), "-xh", "daemon_directory"],
            capture_output=True,
            text=True,
            check=True,
            timeout=COMMAND_TIMEOUT,
        ).stdout.strip()
        test = [f"{daemon_directory}/master", "-c", str(self.config_directory), "-t"]
        return subprocess.run(test, capture_output=True, timeout=COMMAND_TIMEOUT).returncode != 0

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, ``postfix check``, ``postfix start``, and wait until smtpd
        greets (the first smtpd is what reports a bad table or restriction)."""
        self.write_config()
        self._run("check")
        self._run("start")
        deadline = time.monotonic() + timeout
        while True:
            offset = self._log_size()
            greeting = self.greeting(timeout)
            if isinstance(greeting, Reply) and greeting.code == 220:
                return
            if time.monotonic() > deadline:
                raise PostfixError(
                    f"smtpd on {SMTP_HOST}:{self.port} did not greet within {timeout}s: "
                    f"{greeting}\n{self._log_since(offset)}".rstrip()
                )
            time.sleep(0.05)

    def greeting(self, timeout: float = 10.0) -> Reply | str:
        """smtpd's greeting to 127.0.0.1 (then QUIT), or why there was none."""
        smtp = smtplib.SMTP(timeout=timeout)
        try:
            reply = _reply(*smtp.connect(SMTP_HOST, self.port))
            smtp.quit()
        except (OSError, smtplib.SMTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            smtp.close()
        return reply

    def stop(self, timeout: float = 10.0) -> None:
        """``postfix stop``, then ``postfix abort`` if the master outlives ``timeout``."""
        for action in ("stop", "abort"):
            if not self.running():
                return
            self._run(action)
            deadline = time.monotonic() + timeout
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.running():
            raise PostfixError(f"the Postfix master of {self.config_directory} does not stop")

    def reload(self, timeout: float = 10.0) -> None:
        """``postfix -c DIR reload``, and wait until every smtpd started before it has exited:
        the command returns at once, and an idle old smtpd (old tables) can still take a
        client that connects in the next few milliseconds."""
        old = self.processes("smtpd")
        self._run("reload")
        self.wait_until_exited(old, timeout)

    def processes(self, command: str) -> set[int]:
        """Process ids of the master's live children running ``command`` (Linux /proc)."""
        master = int((self.queue_directory / "pid" / "master.pid").read_text())
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                head, _, tail = stat.read_text().rpartition(")")
            except OSError:  # gone meanwhile
                continue
            name = head.partition("(")[2]
            state, ppid = tail.split()[:2]
            if name == command and int(ppid) == master and state != "Z":
                found.add(int(stat.parent.name))
        return found

    def wait_until_exited(self, pids: set[int], timeout: float = 10.0) -> None:
        """Wait until none of ``pids`` runs any more (exited, or a zombie)."""
        deadline = time.monotonic() + timeout
        while True:
            alive = {pid for pid in pids if self._alive(pid)}
            if not alive:
                return
            if time.monotonic() > deadline:
                raise PostfixError(f"processes {sorted(alive)} still run after {timeout}s")
            time.sleep(0.01)

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            tail = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2]
        except OSError:
            return False
        return tail.split()[0] != "Z"

    def write_cidr_table(self, text: str) -> None:
        """Replace the cidr table atomically (temporary file and rename), as a sink does."""
        if self.cidr_table is None:
            raise PostfixError("this instance has no cidr table (Restrictions.cidr_table)")
        with tempfile.NamedTemporaryFile(
            "w", dir=self.cidr_table.parent, prefix=".relaywatch-", delete=False
        ) as temporary:
            temporary.write(text)
        os.replace(temporary.name, self.cidr_table)

    # -- observation ------------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        return self._log_since(0).splitlines()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """The first maillog_file line matching the regular expression ``pattern``, waiting
        up to ``timeout`` seconds for it (smtpd logs through postlogd, a moment later)."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if compiled.search(line):
                    return line
            if time.monotonic() > deadline:
                tail = "\n".join(self.log_lines()[-20:])
                raise AssertionError(
                    f"no line matching {pattern!r} in {self.maillog_file} within {timeout}s; "
                    f"last lines:\n{tail}"
                )
            time.sleep(0.05)

    def send(
        self,
        client_ip: str,
        sender: str,
        recipients: Sequence[str],
        *,
        helo: str = "client.outside.test",
        timeout: float = 10.0,
    ) -> SmtpResult:
        """One SMTP session from ``client_ip`` (any 127.0.0.x): EHLO, MAIL, each RCPT, DATA if a
        recipient was accepted, QUIT. Refusals are returned, never raised."""
        smtp = smtplib.SMTP(timeout=timeout, source_address=(client_ip, 0))
        try:
            greeting = _reply(*smtp.connect(SMTP_HOST, self.port))
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            return SmtpResult(greeting=None, error=f"{type(exc).__name__}: {exc}")
        stages: dict[str, Reply] = {}
        replies: dict[str, Reply] = {}
        error = None
        try:
            if greeting.code == 220:
                stages["helo"] = _reply(*smtp.ehlo(helo))
            if "helo" in stages and stages["helo"].code == 250:
                stages["mail_from"] = _reply(*smtp.mail(sender))
            if "mail_from" in stages and stages["mail_from"].code == 250:
                for recipient in recipients:
                    replies[recipient] = _reply(*smtp.rcpt(recipient))
            if any(reply.code in (250, 251) for reply in replies.values()):
                try:
                    stages["data"] = _reply(*smtp.data(_message(sender, recipients)))
                except smtplib.SMTPDataError as refused:
                    stages["data"] = _reply(refused.smtp_code, refused.smtp_error)
            smtp.quit()
        except (OSError, smtplib.SMTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            smtp.close()
        return SmtpResult(
            greeting=greeting,
            helo=stages.get("helo"),
            mail_from=stages.get("mail_from"),
            recipients=replies,
            data=stages.get("data"),
            error=error,
        )


# -- fixtures ---------------------------------------------------------------------------------


class StartPostfix(Protocol):
    def __call__(self, restrictions: Restrictions | None = None) -> PostfixInstance: ...


@pytest.fixture
def postfix_factory(tmp_path: Path) -> Iterator[StartPostfix]:
    """Start private Postfix instances (skipped or failed without Postfix, see
    ``require_postfix``); each is stopped afterwards, also when the test failed, and its log
    and configuration are copied to ``tmp_path/postfix-N`` before its directory is removed."""
    require_postfix()
    instances: list[PostfixInstance] = []

    def start(restrictions: Restrictions | None = None) -> PostfixInstance:
        # in /tmp, not tmp_path: see PostfixInstance
        root = Path(tempfile.mkdtemp(prefix="relaywatch-postfix-"))
        root.chmod(0o755)
        instance = PostfixInstance(root, free_port(), restrictions)
        instances.append(instance)
        instance.start()
        return instance

    yield start
    failures = []
    for number, instance in enumerate(instances):
        try:
            instance.stop()
        except PostfixError as exc:
            failures.append(str(exc))
            continue
        kept = tmp_path / f"postfix-{number}"
        shutil.copytree(instance.config_directory, kept / "etc")
        if instance.maillog_file.exists():
            shutil.copy2(instance.maillog_file, kept / "maillog")
        shutil.rmtree(instance.root)
    if failures:
        raise PostfixError("\n".join(failures))


@pytest.fixture
def postfix(postfix_factory: StartPostfix) -> PostfixInstance:
    """One running instance with the default restrictions: an empty cidr table, no policy."""
    return postfix_factory()
