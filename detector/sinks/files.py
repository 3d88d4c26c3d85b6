"""Sinks that keep a file the mail server (or firewall, or DNS server) reads.

One sync of a :class:`FileSink`:

1. render the decisions into the file's new content;
2. if the content equals the file's, stop: nothing is rewritten, nothing is run;
3. write a temporary file in the same directory (fsync'd; the old file's mode and owner, or
   0644 for a new file), run the target's check on it (``postmap -q``, ``nft -c -f``), rename
   it over the file and fsync the directory, so a reader sees the old file or the new one,
   never half of one;
4. run the apply step (``makemap``, then ``reload_command``); if it fails, the previous file
   is put back (or the new one removed when there was none).

Commands run without a shell (``shlex``-split), with a 30 s timeout; a failure is reported by
the first line the command wrote to stderr.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from detector.config import SinkSettings
from detector.decide import Decision
from detector.sinks.sync import Rendered, SyncResult

COMMAND_TIMEOUT = 30.0  # seconds a check or reload command may take
NEW_FILE_MODE = 0o644  # the mail server reads the file as another user


class StepFailed(Exception):
    """A check or apply step failed; the message says why, in one line."""


def run(argv: Sequence[str], stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), ``stdin`` open as its standard input; :class:`StepFailed`
    unless it exits 0 within :data:`COMMAND_TIMEOUT`."""
    command = shlex.join(argv)
    try:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
            done = subprocess.run(
                list(argv), stdin=source, capture_output=True, text=True, errors="replace",
                timeout=COMMAND_TIMEOUT, check=False,
            )  # fmt: skip
    except FileNotFoundError:
        raise StepFailed(f"{command}: command not found") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{command} did not finish within {COMMAND_TIMEOUT:g} s") from None
    except OSError as exc:
        raise StepFailed(f"{command}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        said = first_line(done.stderr) or first_line(done.stdout) or "(no output)"
        raise StepFailed(f"{command} failed (exit status {done.returncode}): {said}")
    return done


def first_line(text: str) -> str:
    """The first line of ``text`` that is not blank, stripped (``""`` when there is none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def read_file(path: Path) -> str | None:
    """The file's text, ``None`` when it does not exist.  Bytes that are not UTF-8 and line
    ends are kept as they are, so writing the text back gives the same bytes."""
    try:
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomically(path: Path, content: str, verify: Callable[[Path], str] | None = None) -> str:
    """Replace ``path`` with ``content`` through a temporary file in the same directory,
    which ``verify`` may check (raising :class:`StepFailed`) before it is renamed over
    ``path``; return what ``verify`` said.  The temporary file never outlives a failure."""
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(handle, "w", encoding="utf-8", errors="surrogateescape", newline="") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, stat.S_IMODE(old.st_mode) if old else NEW_FILE_MODE)
        if old and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
            with contextlib.suppress(PermissionError):  # only root may give a file away
                os.chown(temporary, old.st_uid, old.st_gid)
        checked = verify(Path(temporary)) if verify is not None else ""
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    return checked


def _restore(path: Path, previous: str | None) -> None:
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        write_atomically(path, previous)


def _why(error: OSError) -> str:
    return error.strerror or str(error)


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


class FileSink(ABC):
    """A sink that keeps one file (see the module's docstring for one sync).

    A target says how to :meth:`render` the decisions and may change :meth:`content` (to
    keep the rest of a file it shares), :meth:`verify` (its check of a candidate file) and
    :meth:`apply` (what makes the target read the new file).
    """

    kind: ClassVar[str]

    def __init__(self, settings: SinkSettings) -> None:
        assert settings.path is not None, "SinkSettings requires a path for every file sink"
        self.path = settings.path
        self.name = f"{self.kind} {self.path}"
        self.dry_run = settings.dry_run
        self.reload = shlex.split(settings.reload_command) if settings.reload_command else None

    @abstractmethod
    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        """The file's text for ``decisions`` (those in force at ``now``)."""

    def content(self, rendered: Rendered, current: str | None) -> str:
        """The file's new content, given its ``current`` one (``None``: no file yet)."""
        return rendered.text

    def verify(self, candidate: Path) -> str:
        """Check ``candidate`` as the target would read it (:class:`StepFailed` if it would
        not); say what was checked, or ``""`` when the target has no check."""
        return ""

    def apply(self) -> str:
        """Make the target use the new file; say what ran."""
        if self.reload is None:
            return ""
        run(self.reload)
        return f"ran {shlex.join(self.reload)}"

    def sync(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        rendered = self.render(decisions, now)
        try:
            current, content = self._contents(rendered)
        except StepFailed as exc:
            return self._result(rendered, False, False, str(exc))
        if content == current:
            return self._result(rendered, True, False, f"unchanged, {_entries(rendered.entries)}")
        if self.dry_run:
            return self._result(
                rendered, True, True, f"dry run: would write {_entries(rendered.entries)}"
            )
        try:
            checked = write_atomically(self.path, content, self.verify)
        except StepFailed as exc:
            return self._result(rendered, False, False, f"check failed, file kept: {exc}")
        except OSError as exc:
            return self._result(rendered, False, False, f"cannot write {self.path}: {_why(exc)}")
        try:
            applied = self.apply()
        except StepFailed as exc:
            try:
                _restore(self.path, current)
            except OSError as error:
                failed = f"{exc}; the previous file could not be put back: {_why(error)}"
                return self._result(rendered, False, True, failed)
            undone = "previous file restored" if current is not None else "new file removed"
            return self._result(rendered, False, False, f"{exc}; {undone}")
        done = ", ".join(filter(None, [checked, applied]))
        wrote = f"wrote {_entries(rendered.entries)}" + (f" ({done})" if done else "")
        return self._result(rendered, True, True, wrote)

    def check(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        rendered = self.render(decisions, now)
        try:
            current, content = self._contents(rendered)
            with tempfile.TemporaryDirectory(prefix="relaywatch-check-") as directory:
                candidate = Path(directory) / self.path.name
                candidate.write_text(content, encoding="utf-8", errors="surrogateescape")
                checked = self.verify(candidate)
        except StepFailed as exc:
            return self._result(rendered, False, False, f"check failed: {exc}")
        except OSError as exc:
            return self._result(rendered, False, False, f"check failed: {_why(exc)}")
        return self._result(
            rendered, True, content != current,
            f"rendered {_entries(rendered.entries)}; {checked or 'this target has no check'}",
        )  # fmt: skip

    def close(self) -> None:  # noqa: B027 (empty on purpose, not abstract)
        """Nothing to release: a file sink holds nothing between syncs."""

    def _contents(self, rendered: Rendered) -> tuple[str | None, str]:
        """The file's current content (``None``: no file) and its new one."""
        try:
            current = read_file(self.path)
        except OSError as exc:
            raise StepFailed(f"cannot read {self.path}: {_why(exc)}") from None
        try:
            return current, self.content(rendered, current)
        except StepFailed as exc:  # the file is not as this target can keep it
            raise StepFailed(f"{self.path}: {exc}") from None

    def _result(self, rendered: Rendered, ok: bool, changed: bool, message: str) -> SyncResult:
        if rendered.left_out:
            count = len(rendered.left_out)
            message += f"; {count} decision{'s' if count > 1 else ''} left out: "
            message += "; ".join(rendered.left_out[:5]) + ("; …" if count > 5 else "")
        return SyncResult(self.name, ok, changed, rendered.entries, message)
