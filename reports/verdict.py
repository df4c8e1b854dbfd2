"""The verdict rules, in one place (docs/DESIGN.md "What conformant means in a report").

- A MUST violation makes a target NON-CONFORMANT unless a waiver covers it.
- A SHOULD violation is a warning; a MAY "violation" is only noted.
- A harness error is never the device's fault: it makes the target INCONCLUSIVE, as does a target
  that could not be opened or produced no results, a test that was not run, and a run that did not
  finish (interrupted, stopped early, a worker lost).
- A run restricted to a selection keeps its verdict word, scoped in its text: "CONFORMANT on 18 of
  552 tests (selection: -k reset)" (``verdict_text``).
"""

from __future__ import annotations

import datetime as dt

from .waivers import find_waiver

# Clause statuses, strongest first: combining statuses keeps the strongest (the precedence rule).
# Strongest first. "unobservable": no test, and the catalogue says no driver can see the duty kept;
# "not-applicable": a device-type clause of another type than the target's (5.x).
STATUSES = ("fail", "waived", "pass", "skip", "not-run", "not-covered", "unobservable", "not-applicable")
VERDICTS = ("NON-CONFORMANT", "INCONCLUSIVE", "CONFORMANT")  # worst first
SEVERITIES = ("must", "should", "may")  # strongest first
KINDS = ("pass", "violation", "waived", "skip", "not-run", "harness-error")

_LEVEL_SEVERITY = {"MUST": "must", "MUST NOT": "must", "SHOULD": "should", "SHOULD NOT": "should", "MAY": "may"}
_LEVEL_ORDER = tuple(_LEVEL_SEVERITY)
_RESULT_FIELDS = ("nodeid", "target", "test", "clauses", "outcome", "message", "expected", "observed",
                  "level", "longrepr", "duration")
_OUTCOME_KIND = {"passed": "pass", "skipped": "skip", "failed": "violation"}


def strongest(values, order):
    """The first of ``order`` present in ``values`` (None if none is)."""
    present = set(values)
    return next((v for v in order if v in present), None)


def strongest_status(statuses) -> str:
    return strongest(statuses, STATUSES) or "not-covered"


def worst_verdict(verdicts) -> str:
    # No targets at all proves nothing about any device.
    return strongest(verdicts, VERDICTS) or "INCONCLUSIVE"


def severity(clause_ids, catalogue) -> str | None:
    """Strongest level among ``clause_ids``; an id missing from the catalogue counts as MUST."""
    levels = [_LEVEL_SEVERITY[catalogue[c].level] if c in catalogue else "must" for c in clause_ids]
    return strongest(levels, SEVERITIES)


def kind_of(result: dict) -> str:
    """The plugin's classification; derived from the pytest outcome only if it gave none.

    Anything unrecognised is a harness error: it must not pass for a device verdict either way.
    """
    kind = result.get("kind")
    if kind in ("pass", "violation", "skip", "not-run", "harness-error"):
        return kind
    return _OUTCOME_KIND.get(result.get("outcome"), "harness-error")


def primary_and_implicated(result: dict) -> tuple[str | None, list[str]]:
    """The clause a violation proves broken, and those it merely touches (one primary clause:
    docs/DESIGN.md "What conformant means in a report").

    A result from before the plugin named a primary clause (an old JSON or journal) has only
    ``violated``: one clause there is the primary one; several (a plain assert charged to every
    claim) or none in a test claiming several say no clause was singled out, so none is primary.
    """
    claims = list(result.get("clauses") or [])
    if "primary" in result:
        primary = result.get("primary") or None
        implicated = list(result.get("implicated") or [])
    else:
        violated = list(dict.fromkeys(result.get("violated") or claims))
        primary = violated[0] if len(violated) == 1 else None
        implicated = [] if primary else violated
    if primary is None and len(claims) == 1 and not implicated:
        primary = claims[0]  # a plain assert in a single-clause test is that clause
    return primary, [c for c in dict.fromkeys(implicated) if c != primary]


def judge_result(result: dict, target_spec: str | None, catalogue, waivers, on: dt.date) -> dict:
    """Return a copy of ``result`` with kind, primary, implicated, violated, severity and waivers settled.

    Severity, waivers and the clause matrix work on the primary clause alone; ``violated`` is the
    primary clause as a list (empty when none is named). A violation that names no primary clause
    is still a device fault: it counts at the strongest level of the clauses it implicates, MUST if
    none (a failure is never dropped), but fails no clause and no waiver covers it.
    """
    # Every field the report promises exists, even if a plugin left it out.
    judged = {**dict.fromkeys(_RESULT_FIELDS), **result}
    judged["clauses"] = list(result.get("clauses") or [])
    kind = kind_of(result)
    judged.update(kind=kind, primary=None, implicated=[], violated=[], severity=None, waivers=[])
    if kind != "violation":
        return judged

    primary, implicated = primary_and_implicated(result)
    judged.update(primary=primary, implicated=implicated, violated=[primary] if primary else [])
    if primary is not None:
        waiver = find_waiver(waivers, on, target_id=result.get("target"), target_spec=target_spec,
                             clause=primary, nodeid=result.get("nodeid"), test=result.get("test"))
        if waiver is not None:
            judged["waivers"].append({"clause": primary, **waiver.to_dict()})
            judged["kind"] = "waived"
    # A check may name the weaker half of a mixed statement ("SHOULD accept, else MUST refuse").
    if result.get("level") in _LEVEL_SEVERITY:
        judged["severity"] = _LEVEL_SEVERITY[result["level"]]
    else:
        judged["severity"] = severity([primary] if primary else implicated, catalogue) or "must"
    return judged


def result_clause_statuses(judged: dict) -> dict[str, str]:
    """What one judged result says about each clause it claims, and about its primary clause.

    A claimed clause of a result that failed on another clause (or errored) was not shown: not-run.
    Implicated clauses are listed on the result only: they were not seen to break.
    """
    kind = judged["kind"]
    plain = {"pass": "pass", "skip": "skip"}.get(kind, "not-run")
    statuses = dict.fromkeys(judged["clauses"], plain)
    primary = judged.get("primary")
    if primary and kind in ("violation", "waived"):
        statuses[primary] = "waived" if kind == "waived" else "fail"
    return statuses


def clause_statuses(results) -> dict[str, dict]:
    """Per clause claimed by any of ``results`` (one target's): {"status", "tests"}."""
    seen: dict[str, list] = {}
    for judged in results:
        for clause, status in result_clause_statuses(judged).items():
            seen.setdefault(clause, []).append((status, judged.get("nodeid")))
    return {
        clause: {"status": strongest_status(s for s, _ in pairs), "tests": sorted({n for _, n in pairs if n})}
        for clause, pairs in seen.items()
    }


def result_counts(results) -> dict:
    counts = dict.fromkeys(
        ("results", "passed", "failed", "must", "warnings", "may", "waived", "skipped", "not_run", "harness_errors"), 0)
    for judged in results:
        counts["results"] += 1
        kind = judged["kind"]
        if kind == "pass":
            counts["passed"] += 1
        elif kind == "skip":
            counts["skipped"] += 1
        elif kind == "not-run":  # no verdict on the device, for a reason that is not the device's
            counts["not_run"] += 1
        elif kind == "waived":
            counts["waived"] += 1
        elif kind == "harness-error":
            counts["harness_errors"] += 1
        else:
            counts["failed"] += 1
            counts[{"must": "must", "should": "warnings", "may": "may"}[judged["severity"]]] += 1
    return counts


def target_verdict(target: dict, counts: dict, scope: dict | None = None) -> tuple[str, list[str]]:
    """(verdict, reasons): NON-CONFORMANT > INCONCLUSIVE > CONFORMANT, reasons in plain words.

    ``scope`` (reports.build): a run that did not finish is INCONCLUSIVE, unless an unwaived MUST
    violation was already proven (that stands whatever did not run)."""
    unfinished = [f"run incomplete: {r}" for r in scope["reasons"]] if scope and not scope["complete"] else []
    if counts["must"]:
        return "NON-CONFORMANT", [f"{counts['must']} unwaived MUST-level violation(s)", *unfinished]
    reasons = list(unfinished)
    if target.get("error"):
        reasons.append(f"target could not be opened: {target['error']}")
    if counts["harness_errors"]:
        reasons.append(f"{counts['harness_errors']} harness error(s): the harness, not the device, failed")
    if counts["not_run"]:
        reasons.append(f"{counts['not_run']} test(s) not run on this target")
    if not counts["results"]:
        reasons.append("no test results for this target")
    if reasons:
        return "INCONCLUSIVE", reasons
    if counts["warnings"]:
        reasons.append(f"{counts['warnings']} SHOULD-level warning(s)")
    if counts["waived"]:
        reasons.append(f"{counts['waived']} waived violation(s)")
    return "CONFORMANT", reasons


def verdict_text(verdict: str, scope: dict | None) -> str:
    """The verdict in words, scoped to what ran: never the bare word for a selection or an unfinished run."""
    if not scope or (scope["complete"] and not scope["partial"]):
        return verdict
    tests = scope["tests"]
    total = tests["total"]
    if total is None and not scope["partial"]:  # the default suites were not counted: what was selected
        total = tests["selected"]
    count = f"{tests['run']} of {total} tests" if total is not None else f"{tests['run']} test{'' if tests['run'] == 1 else 's'}"
    head = f"{verdict} on {count}"
    notes = []
    if scope["partial"]:
        notes.append(f"selection: {scope['selection'] or 'a subset of the suites'}")
    if not scope["complete"]:
        notes.extend(scope["reasons"])
    return f"{head} ({'; '.join(notes)})"


def untested_status(clause) -> str:
    """The status of a clause no test reached: a gap, unless no driver could see it kept."""
    return "not-covered" if clause.observable else "unobservable"


def _figures(clauses, statuses: dict[str, str]) -> dict:
    by_status = dict.fromkeys(STATUSES, 0)
    for c in clauses:
        by_status[statuses.get(c.id) or untested_status(c)] += 1
    total = len(clauses)
    # Covered: a verdict was reached on the clause. A skip or a test that did not run reached none.
    covered = by_status["pass"] + by_status["fail"] + by_status["waived"]
    observable = total - by_status["unobservable"]
    return {
        "clauses": total, "covered": covered,
        "passed": by_status["pass"], "failed": by_status["fail"], "waived": by_status["waived"],
        "skipped": by_status["skip"], "not_run": by_status["not-run"], "not_covered": by_status["not-covered"],
        "unobservable": by_status["unobservable"],
        # Against the whole catalogue (every statement counts), and against what a driver can see.
        "percent_covered": round(100.0 * covered / total, 1) if total else 0.0,
        "percent_covered_observable": round(100.0 * covered / observable, 1) if observable else 0.0,
    }


def coverage(catalogue, statuses: dict[str, str], device_types=None) -> dict:
    """Coverage of the catalogue given each clause's status; catalogue clauses only.

    ``device_types``: the device types of the targets judged (None: every type), so a chapter-5
    clause counts only where a device of its type was under test.
    """
    clauses = [c for c in catalogue
               if device_types is None or c.device_type is None or c.device_type in device_types]
    groups = list(dict.fromkeys(c.group for c in clauses))
    chapters = list(dict.fromkeys(c.chapter for c in clauses))
    levels = sorted({c.level for c in clauses}, key=_LEVEL_ORDER.index)
    return {
        "all": _figures(clauses, statuses),
        "by_group": {g: _figures([c for c in clauses if c.group == g], statuses) for g in groups},
        "by_chapter": {ch: _figures([c for c in clauses if c.chapter == ch], statuses) for ch in chapters},
        "by_level": {lv: _figures([c for c in clauses if c.level == lv], statuses) for lv in levels},
    }

