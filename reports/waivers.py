"""Waiver files: a vendor's signed-off exceptions to MUST/SHOULD violations (a MUST failure is
non-conformant unless waived, with reason and evidence: docs/DESIGN.md "What conformant means in a report").

A waiver file is TOML with one ``[[waiver]]`` table per exception::

    [[waiver]]
    target   = "vhost-user:*"           # fnmatch glob against the target id or its --target spec
    clause   = "dev.basic.feature-bits.2"   # exact clause id
    test     = "suites/test_features.py::*"  # optional glob against the test's nodeid (or its id without params)
    reason   = "erratum 12: fixed in firmware 2.1"
    evidence = "JIRA-1234"
    expires  = 2027-06-30                # optional; the waiver stops applying after this date

Every defect is a :class:`WaiverError` naming the file, the line and the field. The harness loads
the file once at start-up (fixtures/options.py) with the clause catalogue and the run's date, so a
clause id not in the catalogue or a waiver already expired is refused before any test runs.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path

from virtio import toml_lines

_REQUIRED = ("target", "clause", "reason", "evidence")
_OPTIONAL = ("test", "expires")


@dataclass(frozen=True)
class Waiver:
    entry: int  # 1-based position in its file, so a report can point back at it
    target: str
    clause: str
    reason: str
    evidence: str
    test: str | None = None
    expires: dt.date | None = None
    source: str | None = None

    def expired(self, on: dt.date) -> bool:
        """A waiver still holds on its expiry day itself."""
        return self.expires is not None and on > self.expires

    def matches(self, *, target_id: str, target_spec: str | None, clause: str, nodeid: str,
                test: str | None = None) -> bool:
        # fnmatchcase: the same answer on every platform (fnmatch folds case on Windows).
        if clause != self.clause:
            return False
        if not any(fnmatch.fnmatchcase(t, self.target) for t in (target_id, target_spec) if t):
            return False
        if self.test is not None:
            return any(fnmatch.fnmatchcase(t, self.test) for t in (nodeid, test) if t)
        return True

    def to_dict(self) -> dict:
        """Plain-JSON form used in the report."""
        return {
            "entry": self.entry, "source": self.source, "target": self.target, "clause": self.clause,
            "test": self.test, "reason": self.reason, "evidence": self.evidence,
            "expires": self.expires.isoformat() if self.expires else None,
        }


class WaiverError(ValueError):
    """A waiver file that cannot be used; the message names the file, the line and the field."""


def _parse_date(value, where: str) -> dt.date:
    # TOML has a native date type; a quoted ISO date is accepted too as it is an easy slip to make.
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise WaiverError(f"{where('expires')}: must be a date (YYYY-MM-DD), got {value!r}")


def parse_waiver(entry: int, raw, source: str | None = None, *, text: str | None = None, line: int | None = None,
                 catalogue=None, on: dt.date | None = None) -> Waiver:
    """Validate one ``[[waiver]]`` table; every error names the entry and the field (and, given the
    file's ``text`` and the table's ``line``, the line of that field).

    catalogue: clause ids must be in it (a misspelt id would waive nothing, silently). on: the run's
    date; a waiver already expired then is an error (it would be listed unused, silently).
    """
    def where(key: str | None = None) -> str:
        at = source or "waiver file"
        if line is not None:
            at += f":{toml_lines.key_line(text, line, key) if key and text else line}"
        desc = f"waiver #{entry}"
        if isinstance(raw, dict):
            desc += f" (target={raw.get('target')!r}, clause={raw.get('clause')!r})"
        return f"{at}: {desc}" + (f" {key}" if key else "")

    if not isinstance(raw, dict):
        raise WaiverError(f"{where()}: must be a table")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise WaiverError(f"{where(None)}: missing required field(s) {missing}")
    unknown = sorted(k for k in raw if k not in _REQUIRED + _OPTIONAL)
    if unknown:  # a misspelt "expiry" would otherwise silently make a waiver eternal
        raise WaiverError(f"{where(unknown[0])}: unknown field(s) {unknown}; known: {sorted(_REQUIRED + _OPTIONAL)}")
    for key in _REQUIRED + ("test",):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise WaiverError(f"{where(key)}: must be a non-empty string")
    if catalogue is not None and raw["clause"] not in catalogue:
        near = difflib.get_close_matches(raw["clause"], [c.id for c in catalogue], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise WaiverError(f"{where('clause')}: {raw['clause']!r} is not in the clause catalogue{hint}")
    expires = _parse_date(raw["expires"], where) if "expires" in raw else None
    waiver = Waiver(entry=entry, target=raw["target"], clause=raw["clause"], reason=raw["reason"],
                    evidence=raw["evidence"], test=raw.get("test"), expires=expires, source=source)
    if on is not None and waiver.expired(on):
        raise WaiverError(f"{where('expires')}: expired on {expires.isoformat()} (the run's date is {on.isoformat()}); "
                          "renew it with new evidence or remove it")
    return waiver


def parse_waivers(data: dict, source: str | None = None, *, text: str | None = None, catalogue=None,
                  on: dt.date | None = None) -> list[Waiver]:
    unknown = sorted(k for k in data if k != "waiver")
    if unknown:
        raise WaiverError(f"{source or 'waiver file'}: unknown top-level key(s) {unknown}; expected [[waiver]] tables")
    entries = data.get("waiver", [])
    if not isinstance(entries, list):
        raise WaiverError(f"{source or 'waiver file'}: 'waiver' must be an array of tables ([[waiver]])")
    heads = toml_lines.array_table_lines(text, "waiver") if text is not None else []
    # the n-th [[waiver]] header is the n-th entry unless the file writes them in an unusual form
    lines = heads if len(heads) == len(entries) else [None] * len(entries)
    return [parse_waiver(n, raw, source, text=text, line=line, catalogue=catalogue, on=on)
            for n, (raw, line) in enumerate(zip(entries, lines), 1)]


def load_waivers(path, *, catalogue=None, on: dt.date | None = None) -> list[Waiver]:
    """Read and validate a waiver file; raises WaiverError (a ValueError naming the file, line and
    field) on any defect. With ``catalogue`` and ``on`` (the run's date), also unknown clause ids
    and expired waivers (see parse_waiver)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise WaiverError(f"{path}: cannot read the waiver file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise WaiverError(f"{path}: not a TOML file: byte {exc.start} is not UTF-8") from None
    data, line, msg = toml_lines.decode(text)
    if data is None:
        raise WaiverError(f"{path}:{line}: not valid TOML: {msg}")
    return parse_waivers(data, source=str(path), text=text, catalogue=catalogue, on=on)


def find_waiver(waivers, on: dt.date, **facts) -> Waiver | None:
    """The first unexpired waiver (file order) matching ``facts`` (see Waiver.matches)."""
    for waiver in waivers:
        if not waiver.expired(on) and waiver.matches(**facts):
            return waiver
    return None
