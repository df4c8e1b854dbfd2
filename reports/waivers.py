"""Waiver files: a vendor's signed-off exceptions to MUST/SHOULD violations (DESIGN: "unless waived
in a waiver file, with reason").

A waiver file is TOML with one ``[[waiver]]`` table per exception::

    [[waiver]]
    target   = "vhost-user:*"           # fnmatch glob against the target id or its --target spec
    clause   = "dev.basic.feature-bits.2"   # exact clause id
    test     = "suites/test_features.py::*"  # optional glob against the test's nodeid (or its id without params)
    reason   = "erratum 12: fixed in firmware 2.1"
    evidence = "JIRA-1234"
    expires  = 2027-06-30                # optional; the waiver stops applying after this date
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

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
    raise ValueError(f"{where}: expires must be a date (YYYY-MM-DD), got {value!r}")


def parse_waiver(entry: int, raw, source: str | None = None) -> Waiver:
    """Validate one ``[[waiver]]`` table; every error names the entry."""
    if not isinstance(raw, dict):
        raise ValueError(f"waiver #{entry}: must be a table")
    where = f"waiver #{entry} (target={raw.get('target')!r}, clause={raw.get('clause')!r})"
    if source:
        where = f"{source}: {where}"
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{where}: missing required field(s) {missing}")
    unknown = sorted(k for k in raw if k not in _REQUIRED + _OPTIONAL)
    if unknown:  # a misspelt "expiry" would otherwise silently make a waiver eternal
        raise ValueError(f"{where}: unknown field(s) {unknown}")
    for key in _REQUIRED + ("test",):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise ValueError(f"{where}: {key} must be a non-empty string")
    expires = _parse_date(raw["expires"], where) if "expires" in raw else None
    return Waiver(entry=entry, target=raw["target"], clause=raw["clause"], reason=raw["reason"],
                  evidence=raw["evidence"], test=raw.get("test"), expires=expires, source=source)


def parse_waivers(data: dict, source: str | None = None) -> list[Waiver]:
    unknown = sorted(k for k in data if k != "waiver")
    if unknown:
        raise ValueError(f"{source or 'waiver file'}: unknown top-level key(s) {unknown}; expected [[waiver]] tables")
    entries = data.get("waiver", [])
    if not isinstance(entries, list):
        raise ValueError(f"{source or 'waiver file'}: 'waiver' must be an array of tables ([[waiver]])")
    return [parse_waiver(n, raw, source) for n, raw in enumerate(entries, 1)]


def load_waivers(path) -> list[Waiver]:
    """Read and validate a waiver file; raises ValueError (naming the entry) on any defect."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return parse_waivers(data, source=str(path))


def find_waiver(waivers, on: dt.date, **facts) -> Waiver | None:
    """The first unexpired waiver (file order) matching ``facts`` (see Waiver.matches)."""
    for waiver in waivers:
        if not waiver.expired(on) and waiver.matches(**facts):
            return waiver
    return None
