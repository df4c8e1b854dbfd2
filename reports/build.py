"""Assemble a report dict from a run dict: plain JSON, deterministic, no HTML (docs/DESIGN.md
"Clauses and traceability": per clause its tests, outcome, and "not covered" where no test exists).

Deterministic means: results sorted by (nodeid, target), targets by id, clauses in catalogue order,
and nothing read from the clock unless the run gives no start date (then waiver expiry uses today).
"""

from __future__ import annotations

import base64
import datetime as dt
import json

from virtio.clauses import load_catalogue

from . import verdict as rules

SCHEMA = "virtio-conformance/report/1"
RUN_SCHEMA = "virtio-conformance/run/1"
NO_TARGET = "(no target)"  # results a plugin could not attribute to a target still count
SECTION_VERSION = "1.4"  # "section" in the report: the current committee specification

_IDENTITY = (
    "spec", "transport", "device_type", "device_id", "description", "bus_name",
    "offered_features", "offered_feature_names", "negotiated_features", "negotiated_feature_names",
    "config", "serial", "serial_error", "error",
)
_RUN_FIELDS = ("started", "finished", "duration", "command_line", "cwd", "harness", "environment", "spec_version")


def _plain(value):
    """json.dumps fallback: whatever a plugin slipped in becomes plain JSON instead of an exception."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b16encode(bytes(value)).decode().lower()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    return str(value)


def plain_json(obj):
    """A deep copy of ``obj`` holding only JSON types (so the input run is never mutated)."""
    return json.loads(json.dumps(obj, default=_plain))


def _run_date(run: dict) -> dt.date:
    """The day waivers are judged on: the run's own start, so rebuilding a report gives the same answer."""
    started = run.get("started")
    if isinstance(started, str):
        try:
            return dt.datetime.fromisoformat(started).date()
        except ValueError:
            pass
    return dt.date.today()


def _target_entry(target_id: str, raw: dict | None) -> dict:
    raw = raw or {}
    entry = {"id": target_id, **{k: raw.get(k) for k in _IDENTITY}}
    entry["spec"] = entry["spec"] or target_id
    for key in ("offered_feature_names", "negotiated_feature_names"):
        entry[key] = list(entry[key] or [])
    entry["config"] = dict(entry["config"] or {})
    return entry


def _clause_entry(clause, per_target: dict) -> dict:
    return {
        "id": clause.id, "catalogued": True, "section": clause.section(SECTION_VERSION),
        "sections": dict(clause.sections), "level": clause.level, "group": clause.group,
        "chapter": clause.chapter, "device_type": clause.device_type,
        "observable": clause.observable, "unobservable_because": clause.unobservable_because,
        "summary": clause.summary, "features": list(clause.features),
        "status": rules.strongest_status(pt["status"] for pt in per_target.values()),
        "per_target": per_target,
    }


def _uncatalogued_entry(clause_id: str, per_target: dict) -> dict:
    # Tests claiming ids the catalogue lacks are shown, not dropped: the checker should catch them,
    # but a report must not hide a failure because its id was misspelt.
    return {
        "id": clause_id, "catalogued": False, "section": None, "sections": {}, "level": None, "group": None,
        "chapter": None, "device_type": None, "observable": True, "unobservable_because": "",
        "summary": "not in the clause catalogue (violations count as MUST)", "features": [],
        "status": rules.strongest_status(pt["status"] for pt in per_target.values()),
        "per_target": per_target,
    }


def build_report(run: dict, catalogue=None, waivers=None) -> dict:
    """Judge a run dict (schema virtio-conformance/run/1) and return the report dict."""
    if run.get("schema") not in (None, RUN_SCHEMA):
        raise ValueError(f"unsupported run schema {run.get('schema')!r}; expected {RUN_SCHEMA!r}")
    catalogue = load_catalogue() if catalogue is None else catalogue
    waivers = list(waivers or [])
    run = plain_json(run)
    on = _run_date(run)

    raw_targets = run.get("targets") or {}
    raw_results = run.get("results") or []
    target_ids = sorted(set(raw_targets) | {r.get("target") or NO_TARGET for r in raw_results})
    targets = {t: _target_entry(t, raw_targets.get(t)) for t in target_ids}

    results = []
    for raw in raw_results:
        raw = {**raw, "target": raw.get("target") or NO_TARGET}
        results.append(rules.judge_result(raw, targets[raw["target"]]["spec"], catalogue, waivers, on))
    results.sort(key=lambda r: (str(r.get("nodeid") or ""), r["target"]))

    applies = {t: (lambda c, dt=targets[t]["device_type"]: c not in catalogue or catalogue[c].applies_to(dt)) for t in target_ids}
    scopes, run_scope, unreached = _scopes(run, results, target_ids, applies)
    statuses = {}  # target -> clause -> {"status", "tests"}
    for t, entry in targets.items():
        mine = [r for r in results if r["target"] == t]
        statuses[t] = rules.clause_statuses(mine)
        # Clauses whose tests exist but reached no result here (not selected, or never started).
        for clause in sorted(unreached.get(t, ())):
            statuses[t].setdefault(clause, {"status": "not-run", "tests": []})
        counts = rules.result_counts(mine)
        entry["verdict"], entry["verdict_reasons"] = rules.target_verdict(entry, counts, scopes[t])
        entry["scope"] = scopes[t]
        entry["verdict_text"] = rules.verdict_text(entry["verdict"], scopes[t])
        entry["counts"] = counts
        entry["coverage"] = rules.coverage(
            catalogue, {c: s["status"] for c, s in statuses[t].items()}, device_types={entry["device_type"]})

    def per_target(clause_id):
        clause = catalogue[clause_id] if clause_id in catalogue else None

        def untested(t):
            if clause is None:
                return "not-covered"
            if not clause.applies_to(targets[t]["device_type"]):
                return "not-applicable"
            return rules.untested_status(clause)
        def status(t):
            got = statuses[t].get(clause_id)
            # A chapter-5 test skips on devices of other types: the clause is not theirs, not a gap.
            if got is None or (got["status"] in ("skip", "not-run") and clause is not None
                               and not clause.applies_to(targets[t]["device_type"])):
                return {"status": untested(t), "tests": got["tests"] if got else []}
            return got
        return {t: status(t) for t in target_ids}

    clauses = [_clause_entry(c, per_target(c.id)) for c in catalogue]
    unknown = sorted({c for st in statuses.values() for c in st if c not in catalogue})
    clauses += [_uncatalogued_entry(c, per_target(c)) for c in unknown]

    totals = dict.fromkeys(rules.result_counts([]), 0)
    for entry in targets.values():
        for key, n in entry["counts"].items():
            totals[key] += n

    verdict = rules.worst_verdict(e["verdict"] for e in targets.values())
    report = {
        "schema": SCHEMA,
        "verdict": verdict,
        "verdict_text": rules.verdict_text(verdict, run_scope),
        "scope": run_scope,
        "targets": targets,
        "counts": totals,
        "coverage": rules.coverage(catalogue, {c["id"]: c["status"] for c in clauses if c["catalogued"]},
                                   device_types={e["device_type"] for e in targets.values()}),
        "results": results,
        "clauses": clauses,
        "run": {**{k: run.get(k) for k in _RUN_FIELDS}, "completion": _completion_summary(run)},
        "waivers": _waiver_summary(waivers, results, on),
        "extras": run.get("extras") or {},
    }
    return plain_json(report)


def _completion_summary(run: dict) -> dict:
    comp = run.get("completion") or {}
    return {k: v for k, v in comp.items() if k != "events"} | {"events": list(comp.get("events") or [])}


def _scopes(run: dict, results: list, target_ids: list, applies=None) -> tuple[dict, dict, dict]:
    """What ran against what could have run: per target and for the run.

    Returns ({target: scope}, run scope, {target: clause ids with tests that reached no result}).
    A scope: complete (the run finished and no selected test was left), partial (a selection left
    out tests of the default suites), selection (its text), tests {run, selected, total}
    (total: the default suites with the same targets, null when unknown), clauses_not_selected,
    reasons (why incomplete). Field names are per target and for the run alike, so reports of
    several runs can be merged and compared on them.
    """
    sel = run.get("selection") or {}
    comp = run.get("completion") or {}
    complete = comp.get("complete", True)
    reasons = list(comp.get("reasons") or [])
    universe = sel.get("universe")
    clause_of = {u["nodeid"]: u.get("clauses") or [] for u in universe or ()}
    selected = sel.get("selected")
    if selected is None:  # a run dict from elsewhere: what has a result is what was selected
        selected = [{"nodeid": r.get("nodeid"), "target": r["target"], "clauses": r["clauses"]} for r in results]
    for s in selected:
        if s.get("clauses") is None:
            s["clauses"] = clause_of.get(s["nodeid"], [])
    criteria = bool(sel.get("criteria"))
    done = {r.get("nodeid") for r in results if r["kind"] != "not-run"}

    def scope_of(sel_tests, uni_tests, extra_partial=False, binds=lambda c: True):
        sel_ids = {s["nodeid"] for s in sel_tests}
        partial = extra_partial or (criteria and (uni_tests is None or {u["nodeid"] for u in uni_tests} - sel_ids != set()))
        not_selected = set()
        if uni_tests is not None:
            not_selected = {c for u in uni_tests for c in u.get("clauses") or () if binds(c)} - {c for s in sel_tests for c in s["clauses"]}
        total = len({u["nodeid"] for u in uni_tests} | sel_ids) if uni_tests is not None else None
        return {
            "complete": complete, "partial": bool(partial), "selection": sel.get("text") or "",
            "tests": {"run": len(sel_ids & done), "selected": len(sel_ids), "total": total},
            "clauses_not_selected": sorted(not_selected), "reasons": reasons,
        }, not_selected

    scopes, unreached = {}, {}
    for t in target_ids:
        mine = [s for s in selected if (s.get("target") or NO_TARGET) == t]
        uni = [u for u in universe if u.get("target") == t] if universe is not None else None
        # a clause that does not bind the target's device type is not applicable there, not unselected
        scopes[t], not_selected = scope_of(mine, uni, binds=(applies or {}).get(t, lambda c: True))
        never = {c for s in mine if s["nodeid"] not in done for c in s["clauses"]}
        unreached[t] = not_selected | never
    not_run_targets = list(sel.get("targets_not_run") or [])
    binds_any = (lambda c: any(applies[t](c) for t in target_ids)) if applies else (lambda c: True)
    run_scope, _ = scope_of(selected, universe, extra_partial=bool(not_run_targets), binds=binds_any)
    run_scope["targets_not_run"] = not_run_targets
    if sel.get("universe_error"):
        run_scope["universe_error"] = sel["universe_error"]
    return scopes, run_scope, unreached


def _waiver_summary(waivers, results, on: dt.date) -> dict:
    """Applied waivers with the results they covered; unused ones listed so stale waivers show."""
    used: dict[tuple, set] = {}
    for judged in results:
        for w in judged["waivers"]:
            used.setdefault((w["source"], w["entry"]), set()).add(judged.get("nodeid") or "")
    applied, unused = [], []
    for waiver in waivers:
        nodeids = used.get((waiver.source, waiver.entry))
        if nodeids:
            applied.append({**waiver.to_dict(), "results": sorted(nodeids)})
        else:
            unused.append({**waiver.to_dict(), "expired": waiver.expired(on)})
    return {"applied": applied, "unused": unused}
