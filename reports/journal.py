"""The run journal: one JSON line per fact as the controller learns it, and the one fold that turns
those lines into a run dict (schema virtio-conformance/run/1) for ``reports.build_report``.

The plugin writes the journal while the run goes (flushed per line, so a SIGKILL of the harness
loses at most the line being written); the report at the end of the run and
``python3 -m reports rebuild JOURNAL`` are both ``fold(records)``, so they cannot disagree.

Records (each a JSON object with a "record" field):

    header      schema, started (ISO) / started_ts, command_line, cwd, harness, environment,
                spec_version, targets [{id, spec, transport}], selection {criteria, text, partial,
                targets_not_run}, extras
    identity    target, identity {...}
    collection  selected [{nodeid, target, clauses}]  (clauses null where unknown, under xdist)
    universe    tests [{nodeid, target, clauses}] | error   the default suites with these targets
    start       nodeid, target                           a test began (pytest_runtest_logstart)
    result      one phase of one test: the plugin's result entry plus "when"
    event       kind (interrupted | stopped | worker-crashed | worker-down | collection-error), message, ...
    final       finished (ISO) / finished_ts, exitstatus, shouldfail / shouldstop text

A journal without a final record is a run that did not end: it folds to an unfinished run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from .build import RUN_SCHEMA, plain_json

JOURNAL_SCHEMA = "virtio-conformance/journal/1"

# Worst phase wins when phases of one test are merged (a teardown error after a pass is an error).
_RANK = {"pass": 0, "skip": 1, "not-run": 2, "harness-error": 3, "violation": 4}
_CRASH_PHASE = "???"  # xdist's synthetic report for the test a worker died in

INTERRUPTED_MESSAGE = "not run: the run was interrupted before this test's call phase completed"


class JournalWriter:
    """Appends records to ``path`` (if given) and keeps them in memory, in the form they are read back."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.records: list[dict] = []
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8", errors="backslashreplace", newline="\n")

    def write(self, record: dict) -> dict:
        line = json.dumps(plain_json(record), sort_keys=True, ensure_ascii=False)
        self.records.append(json.loads(line))
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
        return self.records[-1]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_journal(path) -> list[dict]:
    """The records of a journal file. A torn last line (the writer was killed mid-line) is dropped;
    a torn line anywhere else is an error naming the line."""
    lines = Path(path).read_text(encoding="utf-8", errors="backslashreplace").splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                break
            raise ValueError(f"{path}:{n}: not a JSON record ({e.msg})") from None
        if not isinstance(rec, dict) or "record" not in rec:
            raise ValueError(f"{path}:{n}: not a journal record (no 'record' field)")
        records.append(rec)
    if not records or records[0].get("record") != "header":
        raise ValueError(f"{path}: the first record is not a journal header")
    if records[0].get("schema") != JOURNAL_SCHEMA:
        raise ValueError(f"{path}: journal schema {records[0].get('schema')!r}, expected {JOURNAL_SCHEMA!r}")
    return records


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _worse(new: dict, old: dict) -> bool:
    if old["kind"] == "skip" and new["kind"] == "pass":
        return False
    return _RANK[new["kind"]] > _RANK[old["kind"]] or (old["when"] == "setup" and old["kind"] == "pass")


def merge_phases(phases: list[dict]) -> dict:
    """One result from the phase records of one test, the worst phase winning.

    A test whose call phase never completed is never a pass: a setup that passed and nothing after
    it (Ctrl-C, a signal, the harness killed) is "not-run"."""
    merged = None
    for rec in phases:
        entry = {k: v for k, v in rec.items() if k not in ("record", "ts")}
        if entry.get("kind") not in _RANK:
            entry["kind"] = "harness-error"
        if merged is None or _worse(entry, merged):
            if merged is not None and merged["kind"] == "pass" and entry["kind"] == "harness-error" and entry["when"] == "teardown":
                entry["message"] = f"teardown: {entry.get('message', '')}"
            merged = entry
    if merged["kind"] == "pass" and not any(p.get("when") in ("call", _CRASH_PHASE) for p in phases):
        merged.update(kind="not-run", outcome="not-run", message=INTERRUPTED_MESSAGE)
    return merged


def _not_run_entry(nodeid: str, target: str | None) -> dict:
    return {
        "nodeid": nodeid, "target": target, "test": nodeid.split("[", 1)[0], "clauses": [], "outcome": "not-run",
        "kind": "not-run", "violated": [], "message": INTERRUPTED_MESSAGE, "expected": None, "observed": None,
        "level": None, "primary": None, "implicated": [], "longrepr": "", "duration": 0.0, "when": "setup",
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fold(records: list[dict]) -> dict:
    """The run dict of a journal's records (see the module docstring)."""
    if not records or records[0].get("record") != "header":
        raise ValueError("a journal starts with its header record")
    header = records[0]
    identities: dict[str, dict] = {}
    phases: dict[str, list] = {}
    started: list[str] = []
    start_target: dict[str, str | None] = {}
    events: list[dict] = []
    collection = universe = final = None
    for rec in records[1:]:
        kind = rec.get("record")
        if kind == "identity":
            prev = identities.get(rec["target"])
            ident = rec.get("identity") or {}
            if prev is None or (prev.get("error") and not ident.get("error")):
                identities[rec["target"]] = ident
        elif kind == "result":
            phases.setdefault(rec["nodeid"], []).append(rec)
        elif kind == "start":
            if rec["nodeid"] not in start_target:
                started.append(rec["nodeid"])
            start_target[rec["nodeid"]] = rec.get("target")
        elif kind == "event":
            events.append(rec)
        elif kind == "collection":
            collection = rec
        elif kind == "universe":
            universe = rec
        elif kind == "final":
            final = rec

    results = {nodeid: merge_phases(p) for nodeid, p in phases.items()}
    for nodeid in started:  # began but no phase arrived: interrupted in its setup
        if nodeid not in results:
            results[nodeid] = _not_run_entry(nodeid, start_target.get(nodeid))
    for r in results.values():
        r.pop("when", None)

    selected = collection.get("selected") if collection else None
    n_selected = len(selected) if selected is not None else None
    # A test not run for a reason of its own (its target unreachable) did finish; an interrupted one did not.
    unfinished = [n for n in started if results[n]["message"] == INTERRUPTED_MESSAGE]
    finished = [n for n in results if results[n]["message"] != INTERRUPTED_MESSAGE]
    of = f" of {n_selected}" if n_selected is not None else ""
    if len(unfinished) > 1:  # xdist: several tests were in flight
        at = f"after {len(finished)}{of} tests (in flight: {', '.join(unfinished[:4])})"
    else:
        at = f"at test {len(finished) + 1}{of}" + (f", in {unfinished[0]}" if unfinished else "")

    reasons, interrupted = [], False
    for e in events:
        if e["kind"] == "interrupted":
            interrupted = True
            reasons.append(f"interrupted{' by ' + e['signal'] if e.get('signal') else ''} {at}")
        elif e["kind"] == "stopped":
            if n_selected is None or len(finished) < n_selected:
                reasons.append(f"{e['message']}: {len(finished)}{of} tests run")
        elif e["kind"] in ("worker-crashed", "worker-down", "collection-error"):
            reasons.append(e["message"])
    if final is None:
        interrupted = True
        reasons.append(f"interrupted {at}: the journal has no final record (the harness process was killed or died)")
    elif not any(e["kind"] == "interrupted" for e in events) and unfinished:
        reasons.append(f"{_plural(len(unfinished), 'test')} never completed: {', '.join(unfinished[:3])}")

    started_ts = header.get("started_ts")
    finished_ts = (final or {}).get("finished_ts") or max((r.get("ts") or 0 for r in records), default=0) or started_ts
    run = {
        "schema": RUN_SCHEMA,
        "started": header.get("started"),
        "finished": (final or {}).get("finished") or (_iso(finished_ts) if finished_ts else None),
        "duration": round(finished_ts - started_ts, 3) if started_ts and finished_ts else None,
        "command_line": header.get("command_line"),
        "cwd": header.get("cwd"),
        "harness": header.get("harness"),
        "environment": header.get("environment"),
        "spec_version": header.get("spec_version"),
        "targets": {},
        "results": sorted(results.values(), key=lambda r: r["nodeid"]),
        "extras": header.get("extras") or {},
        "completion": {
            "complete": not reasons,
            "interrupted": interrupted,
            "reasons": reasons,
            "events": [{k: v for k, v in e.items() if k != "record"} for e in events],
            "journal_final": final is not None,
            "exitstatus": (final or {}).get("exitstatus"),
            "tests_started": len(started),
            "tests_finished": len(finished),
            "tests_selected": n_selected,
        },
        "selection": {
            **(header.get("selection") or {}),
            "selected": selected,
            "universe": universe.get("tests") if universe else None,
            "universe_error": universe.get("error") if universe else None,
        },
    }
    for t in header.get("targets") or []:
        ident = dict(identities.get(t["id"]) or {"spec": t.get("spec"), "transport": t.get("transport"), "error": None})
        run["targets"][t["id"]] = ident
    return run
