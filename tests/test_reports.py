"""Self-tests of reports/: the verdict rules, clause statuses, coverage, waivers, JSON and HTML output."""

from __future__ import annotations

import copy
import html.parser
import json
import random
import re
from pathlib import Path

import pytest

from reports import SCHEMA, Waiver, build_report, load_waivers, write_html, write_json
from reports.html import TEMPLATES, render_html
from virtio.clauses import Catalogue, Clause

# --- fixtures and builders -------------------------------------------------------------------------


def _clause(block, ordinal, level, group="core"):
    return Clause(
        id=f"dev.basic.{block}.{ordinal}", label=f"devicenormative:Basic Facilities of a Virtio Device / {block}",
        ordinal=ordinal, level=level, keywords=(level,), sections={"1.4": "2.9.9", "1.3": "2.8.8"},
        group=group, features=(), summary=f"{block} statement {ordinal}",
    )


MUST, SHOULD, MAY = "dev.basic.t.1", "dev.basic.t.2", "dev.basic.t.3"
ADMIN_MUST_NOT, ADMIN_SHOULD_NOT = "dev.basic.a.1", "dev.basic.a.2"


@pytest.fixture
def catalogue():
    return Catalogue([
        _clause("t", 1, "MUST"), _clause("t", 2, "SHOULD"), _clause("t", 3, "MAY"),
        _clause("a", 1, "MUST NOT", "admin"), _clause("a", 2, "SHOULD NOT", "admin"),
    ])


def target(tid="model:blk", **over):
    info = {
        "spec": tid, "transport": "model", "device_type": "blk", "device_id": 2, "description": "reference blk",
        "bus_name": tid, "offered_features": 1 << 32, "offered_feature_names": ["VIRTIO_F_VERSION_1"],
        "negotiated_features": 1 << 32, "negotiated_feature_names": ["VIRTIO_F_VERSION_1"],
        "config": {"capacity": 2048}, "error": None,
    }
    info.update(over)
    return info


def result(name, kind, clauses, tid="model:blk", violated=None, message="msg"):
    outcome = {"pass": "passed", "violation": "failed", "skip": "skipped", "harness-error": "error"}[kind]
    return {
        "nodeid": f"suites/test_x.py::{name}[{tid}]", "target": tid, "test": f"suites/test_x.py::{name}",
        "clauses": list(clauses), "outcome": outcome, "kind": kind,
        "violated": list(violated if violated is not None else (clauses if kind == "violation" else [])),
        "message": message, "expected": None, "observed": None, "longrepr": "", "duration": 0.01,
    }


def run_of(results, targets=None, **extra):
    run = {
        "schema": "virtio-conformance/run/1", "started": "2026-11-24T22:00:00Z", "finished": "2026-11-24T22:00:12Z",
        "duration": 12.0, "command_line": ["pytest", "--target", "model:blk"],
        "environment": {"python": "3.11.7", "packages": {"jinja2": "3.1"}}, "spec_version": "1.4",
        "targets": targets if targets is not None else {"model:blk": target()},
        "results": results, "extras": {},
    }
    run.update(extra)
    return run


def waiver(entry=1, target="model:*", clause=MUST, **over):
    fields = {"reason": "erratum 12", "evidence": "JIRA-1", **over}
    return Waiver(entry=entry, target=target, clause=clause, **fields)


def status(report, clause_id, tid="model:blk"):
    return next(c for c in report["clauses"] if c["id"] == clause_id)["per_target"][tid]["status"]


# --- verdict rules ---------------------------------------------------------------------------------


def test_must_violation_is_non_conformant(catalogue):
    report = build_report(run_of([result("a", "violation", [MUST]), result("b", "pass", [SHOULD])]), catalogue)
    t = report["targets"]["model:blk"]
    assert (report["verdict"], t["verdict"]) == ("NON-CONFORMANT", "NON-CONFORMANT")
    assert t["counts"]["must"] == 1
    assert report["results"][0]["severity"] == "must"


def test_must_not_counts_as_must(catalogue):
    report = build_report(run_of([result("a", "violation", [ADMIN_MUST_NOT])]), catalogue)
    assert report["verdict"] == "NON-CONFORMANT"


def test_should_violation_is_a_warning_only(catalogue):
    report = build_report(run_of([result("a", "violation", [SHOULD]), result("b", "pass", [MUST])]), catalogue)
    t = report["targets"]["model:blk"]
    assert t["verdict"] == "CONFORMANT"
    assert t["counts"]["warnings"] == 1
    assert report["results"][0]["severity"] == "should"


def test_may_violation_does_not_change_verdict(catalogue):
    report = build_report(run_of([result("a", "violation", [MAY])]), catalogue)
    assert report["verdict"] == "CONFORMANT"
    assert report["targets"]["model:blk"]["counts"]["may"] == 1


def test_severity_is_strongest_violated_level(catalogue):
    report = build_report(run_of([result("a", "violation", [SHOULD, MAY, ADMIN_MUST_NOT])]), catalogue)
    assert report["results"][0]["severity"] == "must"


def test_unknown_violated_clause_counts_as_must(catalogue):
    report = build_report(run_of([result("a", "violation", [SHOULD], violated=["dev.nowhere.1"])]), catalogue)
    assert report["verdict"] == "NON-CONFORMANT"
    unknown = [c for c in report["clauses"] if c["id"] == "dev.nowhere.1"]
    assert unknown and unknown[0]["catalogued"] is False and unknown[0]["status"] == "fail"


def test_violation_without_named_clause_charges_claimed_clauses(catalogue):
    report = build_report(run_of([result("a", "violation", [SHOULD], violated=[])]), catalogue)
    assert report["results"][0]["violated"] == [SHOULD]
    assert status(report, SHOULD) == "fail"


def test_harness_error_is_inconclusive_never_a_device_failure(catalogue):
    report = build_report(run_of([result("a", "harness-error", [MUST]), result("b", "pass", [SHOULD])]), catalogue)
    t = report["targets"]["model:blk"]
    assert t["verdict"] == "INCONCLUSIVE"
    assert t["counts"]["harness_errors"] == 1 and t["counts"]["failed"] == 0
    assert status(report, MUST) == "not-run"


def test_violation_beats_harness_error(catalogue):
    report = build_report(run_of([result("a", "harness-error", [SHOULD]), result("b", "violation", [MUST])]), catalogue)
    assert report["verdict"] == "NON-CONFORMANT"


def test_target_error_is_inconclusive(catalogue):
    targets = {"model:blk": target(error="cannot open /dev/vfio/7")}
    report = build_report(run_of([result("a", "pass", [MUST])], targets), catalogue)
    t = report["targets"]["model:blk"]
    assert t["verdict"] == "INCONCLUSIVE"
    assert any("cannot open" in reason for reason in t["verdict_reasons"])


def test_target_without_results_is_inconclusive(catalogue):
    targets = {"model:blk": target(), "model:net": target("model:net")}
    report = build_report(run_of([result("a", "pass", [MUST])], targets), catalogue)
    assert report["targets"]["model:net"]["verdict"] == "INCONCLUSIVE"
    assert report["targets"]["model:blk"]["verdict"] == "CONFORMANT"
    assert report["verdict"] == "INCONCLUSIVE"


def test_empty_run_is_inconclusive(catalogue):
    assert build_report(run_of([], {}), catalogue)["verdict"] == "INCONCLUSIVE"


def test_overall_verdict_is_worst_over_targets(catalogue):
    targets = {t: target(t) for t in ("model:blk", "model:net", "model:rng")}
    results = [
        result("a", "violation", [MUST], tid="model:blk"),
        result("a", "harness-error", [MUST], tid="model:net"),
        result("a", "pass", [MUST], tid="model:rng"),
    ]
    report = build_report(run_of(results, targets), catalogue)
    assert {t: v["verdict"] for t, v in report["targets"].items()} == {
        "model:blk": "NON-CONFORMANT", "model:net": "INCONCLUSIVE", "model:rng": "CONFORMANT"}
    assert report["verdict"] == "NON-CONFORMANT"


def test_result_for_unlisted_target_still_counts(catalogue):
    report = build_report(run_of([result("a", "violation", [MUST], tid="model:ghost")]), catalogue)
    assert report["targets"]["model:ghost"]["verdict"] == "NON-CONFORMANT"


# --- waivers ---------------------------------------------------------------------------------------


def test_waiver_turns_must_violation_into_waived(catalogue):
    report = build_report(run_of([result("a", "violation", [MUST])]), catalogue, [waiver()])
    r = report["results"][0]
    assert r["kind"] == "waived"
    assert r["waivers"][0]["reason"] == "erratum 12" and r["waivers"][0]["evidence"] == "JIRA-1"
    t = report["targets"]["model:blk"]
    assert t["verdict"] == "CONFORMANT" and t["counts"]["waived"] == 1 and t["counts"]["must"] == 0
    assert status(report, MUST) == "waived"
    assert [w["clause"] for w in report["waivers"]["applied"]] == [MUST]
    assert report["waivers"]["applied"][0]["results"] == [r["nodeid"]]
    assert report["waivers"]["unused"] == []


def primary_result(name, primary, implicated=(), clauses=None, **kw):
    r = result(name, "violation", clauses if clauses is not None else [primary], **kw)
    r.update(primary=primary, implicated=list(implicated), violated=[primary] if primary else [])
    return r


def test_waiver_of_the_primary_clause_covers_the_failure(catalogue):
    """Waivers work on the primary clause: its implicated clauses need no waiver of their own."""
    report = build_report(run_of([primary_result("a", MUST, [SHOULD, ADMIN_MUST_NOT], clauses=[MUST, SHOULD])]),
                          catalogue, [waiver()])
    r = report["results"][0]
    assert r["kind"] == "waived" and (r["primary"], r["implicated"]) == (MUST, [SHOULD, ADMIN_MUST_NOT])
    assert report["targets"]["model:blk"]["verdict"] == "CONFORMANT"
    assert (status(report, MUST), status(report, SHOULD)) == ("waived", "not-run")


def test_waiver_of_an_implicated_clause_does_not_cover_the_failure(catalogue):
    report = build_report(run_of([primary_result("a", MUST, [SHOULD])]), catalogue, [waiver(clause=SHOULD)])
    r = report["results"][0]
    assert r["kind"] == "violation" and r["severity"] == "must" and not r["waivers"]
    assert report["targets"]["model:blk"]["verdict"] == "NON-CONFORMANT"


def test_implicated_clauses_are_listed_not_failed(catalogue):
    """The matrix fails the primary clause only; severity is the primary clause's level."""
    report = build_report(run_of([primary_result("a", SHOULD, [MUST, ADMIN_MUST_NOT], clauses=[SHOULD])]), catalogue)
    r = report["results"][0]
    assert r["severity"] == "should" and r["violated"] == [SHOULD] and r["implicated"] == [MUST, ADMIN_MUST_NOT]
    assert status(report, SHOULD) == "fail"
    assert status(report, MUST) != "fail" and status(report, ADMIN_MUST_NOT) != "fail"
    assert report["targets"]["model:blk"]["verdict"] == "CONFORMANT"
    page = render_html(report)
    assert "implicated (not failed)" in page and ADMIN_MUST_NOT in page


def test_primary_clause_may_be_one_the_test_does_not_claim(catalogue):
    report = build_report(run_of([primary_result("a", ADMIN_MUST_NOT, clauses=[MUST])]), catalogue)
    assert status(report, ADMIN_MUST_NOT) == "fail" and status(report, MUST) == "not-run"
    assert report["targets"]["model:blk"]["verdict"] == "NON-CONFORMANT"


def test_violation_naming_no_primary_clause_fails_none_but_counts(catalogue):
    """A plain assert in a test claiming several clauses: no clause is singled out, none fails,
    the failure still counts (at the strongest level implicated) and no waiver covers it."""
    r = result("a", "violation", [SHOULD, MUST])
    r.update(primary=None, implicated=[SHOULD, MUST], violated=[])
    report = build_report(run_of([r]), catalogue, [waiver(), waiver(entry=2, clause=SHOULD)])
    judged = report["results"][0]
    assert judged["kind"] == "violation" and judged["severity"] == "must" and judged["primary"] is None
    assert (status(report, MUST), status(report, SHOULD)) == ("not-run", "not-run")
    assert report["targets"]["model:blk"]["verdict"] == "NON-CONFORMANT"


def test_result_without_primary_field_reads_its_one_violated_clause_as_primary(catalogue):
    """An old report or journal entry (no ``primary`` field): one violated clause is the primary one."""
    old = result("a", "violation", [MUST, SHOULD], violated=[SHOULD])
    report = build_report(run_of([old]), catalogue)
    assert report["results"][0]["primary"] == SHOULD and status(report, SHOULD) == "fail"


@pytest.mark.parametrize("w, applies", [
    (waiver(target="model:blk"), True),
    (waiver(target="model:net"), False),
    (waiver(clause=SHOULD), False),
    (waiver(test="suites/test_x.py::a*"), True),  # glob against the nodeid
    (waiver(test="suites/test_x.py::a"), True),  # the id without parameters also matches
    (waiver(test="suites/test_y.py::*"), False),
])
def test_waiver_matching(catalogue, w, applies):
    report = build_report(run_of([result("a", "violation", [MUST])]), catalogue, [w])
    assert (report["results"][0]["kind"] == "waived") is applies
    assert len(report["waivers"]["unused"]) == (0 if applies else 1)


def test_waiver_target_glob_matches_spec(catalogue):
    targets = {"vhost-user:a": target("vhost-user:a", spec="vhost-user:/run/blk.sock")}
    run = run_of([result("a", "violation", [MUST], tid="vhost-user:a")], targets)
    report = build_report(run, catalogue, [waiver(target="vhost-user:/run/*")])
    assert report["verdict"] == "CONFORMANT"


def test_expired_waiver_does_not_apply_and_is_listed(catalogue):
    import datetime as dt

    stale = waiver(expires=dt.date(2026, 11, 23))
    report = build_report(run_of([result("a", "violation", [MUST])]), catalogue, [stale])
    assert report["verdict"] == "NON-CONFORMANT"
    assert report["waivers"]["unused"][0]["expired"] is True
    # On its expiry day a waiver still holds.
    today = waiver(expires=dt.date(2026, 11, 24))
    assert build_report(run_of([result("a", "violation", [MUST])]), catalogue, [today])["verdict"] == "CONFORMANT"


def test_unused_waivers_listed_in_json_and_html(catalogue):
    unused = waiver(entry=2, target="model:net", clause=SHOULD)
    report = build_report(run_of([result("a", "violation", [MUST])]), catalogue, [waiver(), unused])
    assert [(w["entry"], w["target"]) for w in report["waivers"]["unused"]] == [(2, "model:net")]
    page = render_html(report)
    section = page[page.index('id="waivers"'):page.index('id="environment"')]
    assert "Unused (1)" in section and "model:net" in section


def test_html_waived_rows_show_reason_evidence_and_device_values(catalogue):
    """A waived failure of a third-party back-end shows why it is waived, the evidence, the waiver
    entry, and what the device did in this run."""
    full = {**result("a", "violation", [MUST]), "expected": "byte 0 = 0xeb", "observed": "0x69"}
    w = waiver(entry=7, reason="qsd 7.2 ignores the offset", evidence="GET_CONFIG reply bytes 00 00 02 00",
               source="waivers/third-party.toml")
    page = render_html(build_report(run_of([full]), catalogue, [w]))
    section = page[page.index('id="waived"'):page.index('id="harness-errors"')]
    for text in ("qsd 7.2 ignores the offset", "GET_CONFIG reply bytes 00 00 02 00", "waivers/third-party.toml #7",
                 "byte 0 = 0xeb", "0x69"):
        assert text in section, text
    assert "still failing" not in section  # one primary clause: a result is waived or it is not
    card = page[page.index('id="targets"'):page.index('id="failures"')]
    assert "with 1 waived" in card


def test_waiver_does_not_cover_harness_errors(catalogue):
    report = build_report(run_of([result("a", "harness-error", [MUST])]), catalogue, [waiver()])
    assert report["verdict"] == "INCONCLUSIVE" and report["waivers"]["applied"] == []


WAIVER_OK = """
[[waiver]]
target = "model:*"
clause = "dev.basic.t.1"
reason = "erratum"
evidence = "JIRA-1"
expires = 2027-01-31

[[waiver]]
target = "vhost-user:*"
clause = "dev.basic.t.2"
test = "suites/test_x.py::*"
reason = "known"
evidence = "mail 2026-11-01"
"""


def test_load_waivers(tmp_path):
    path = tmp_path / "waivers.toml"
    path.write_text(WAIVER_OK)
    first, second = load_waivers(path)
    assert (first.entry, first.clause, first.expires.isoformat(), first.test) == (1, MUST, "2027-01-31", None)
    assert (second.entry, second.test) == (2, "suites/test_x.py::*")


def test_build_report_accepts_waiver_path(tmp_path, catalogue):
    path = tmp_path / "waivers.toml"
    path.write_text(WAIVER_OK)
    report = build_report(run_of([result("a", "violation", [MUST])]), catalogue, str(path))
    assert report["verdict"] == "CONFORMANT"


@pytest.mark.parametrize("bad, words", [
    ('[[waiver]]\ntarget="*"\nclause="x"\nreason="r"\nevidence="e"\n[[waiver]]\ntarget="*"\nclause="y"\nreason="r"\n',
     ["#2", "evidence"]),
    ('[[waiver]]\ntarget="*"\nclause="x"\nevidence="e"\n', ["#1", "reason"]),
    ('[[waiver]]\ntarget="*"\nclause="x"\nreason=""\nevidence="e"\n', ["#1", "reason"]),
    ('[[waiver]]\ntarget="*"\nclause="x"\nreason="r"\nevidence="e"\nexpiry=2027-01-01\n', ["#1", "expiry"]),
    ('[[waiver]]\ntarget="*"\nclause="x"\nreason="r"\nevidence="e"\nexpires="soon"\n', ["#1", "expires"]),
    ('[waivers]\n', ["waivers"]),
    ('[[waiver]\n', []),  # not TOML at all
])
def test_waiver_file_validation(tmp_path, bad, words):
    path = tmp_path / "w.toml"
    path.write_text(bad)
    with pytest.raises(ValueError) as info:
        load_waivers(path)
    for word in words:
        assert word in str(info.value)


# --- clause status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kinds, expected", [
    (["pass", "skip"], "pass"),
    (["skip", "skip"], "skip"),
    (["pass", "violation"], "fail"),
    (["waived", "pass"], "waived"),
    (["waived", "violation"], "fail"),
    (["harness-error"], "not-run"),
    (["harness-error", "pass"], "pass"),
    (["other-clause-violated"], "not-run"),
    ([], "not-covered"),
])
def test_clause_status_precedence(catalogue, kinds, expected):
    results, waivers = [], []
    for n, kind in enumerate(kinds):
        name = f"t{n}"
        if kind == "waived":
            results.append(result(name, "violation", [MUST]))
            waivers.append(waiver(entry=n + 1, test=f"*::{name}*"))
        elif kind == "other-clause-violated":
            results.append(result(name, "violation", [MUST, SHOULD], violated=[SHOULD]))
        else:
            results.append(result(name, kind, [MUST]))
    report = build_report(run_of(results), catalogue, waivers)
    assert status(report, MUST) == expected
    tests = next(c for c in report["clauses"] if c["id"] == MUST)["per_target"]["model:blk"]["tests"]
    assert tests == sorted(r["nodeid"] for r in results)


def test_overall_clause_status_is_worst_over_targets(catalogue):
    targets = {t: target(t) for t in ("model:blk", "model:net")}
    results = [result("a", "pass", [MUST], tid="model:blk"), result("a", "violation", [MUST], tid="model:net")]
    report = build_report(run_of(results, targets), catalogue)
    clause = next(c for c in report["clauses"] if c["id"] == MUST)
    assert clause["status"] == "fail"
    assert {t: pt["status"] for t, pt in clause["per_target"].items()} == {"model:blk": "pass", "model:net": "fail"}
    assert next(c for c in report["clauses"] if c["id"] == MAY)["status"] == "not-covered"


# --- coverage --------------------------------------------------------------------------------------


def test_coverage_counts(catalogue):
    results = [
        result("a", "pass", [MUST, SHOULD]),
        result("b", "skip", [ADMIN_MUST_NOT]),
        result("c", "violation", [MAY]),
    ]
    report = build_report(run_of(results), catalogue)
    cov = report["targets"]["model:blk"]["coverage"]
    # covered = a verdict was reached (passed, failed or waived); a skip is counted apart
    assert cov["all"] == {"clauses": 5, "covered": 3, "passed": 2, "failed": 1, "waived": 0, "skipped": 1,
                          "not_run": 0, "not_covered": 1, "unobservable": 0,
                          "percent_covered": 60.0, "percent_covered_observable": 60.0}
    assert (cov["by_group"]["core"]["covered"], cov["by_group"]["core"]["clauses"]) == (3, 3)
    assert (cov["by_group"]["admin"]["covered"], cov["by_group"]["admin"]["skipped"], cov["by_group"]["admin"]["clauses"]) == (0, 1, 2)
    assert cov["by_level"]["SHOULD NOT"]["not_covered"] == 1
    assert cov["by_level"]["MUST"]["passed"] == 1
    assert list(cov["by_level"]) == ["MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY"]


def _device_clause(device, key, ordinal, level, observable=True):
    return Clause(
        id=f"dev.{key}.x.{ordinal}", label=f"devicenormative:Device Types / {device} / X", ordinal=ordinal,
        level=level, keywords=(level,), sections={"1.4": "5.9.9", "1.3": "5.9.9"}, group="device", features=(),
        summary=f"{key} statement {ordinal}", observable=observable,
        unobservable_because="" if observable else "inside the device",
    )


def test_device_type_clauses_count_only_for_their_type(catalogue):
    cat = Catalogue([*catalogue, _device_clause("Network Device", "net", 1, "MUST"),
                     _device_clause("Network Device", "net", 2, "MUST", observable=False),
                     _device_clause("Block Device", "blk", 1, "MUST")])
    net1, net2, blk1 = "dev.net.x.1", "dev.net.x.2", "dev.blk.x.1"
    targets = {"model:blk": target("model:blk"), "model:net": target("model:net", device_type="net", device_id=1)}
    results = [result("a", "pass", [MUST], tid="model:blk"), result("b", "pass", [net1], tid="model:net")]
    report = build_report(run_of(results, targets), cat)
    per = {c["id"]: {t: pt["status"] for t, pt in c["per_target"].items()} for c in report["clauses"]}
    assert per[net1] == {"model:blk": "not-applicable", "model:net": "pass"}
    assert per[net2] == {"model:blk": "not-applicable", "model:net": "unobservable"}
    assert per[blk1] == {"model:blk": "not-covered", "model:net": "not-applicable"}
    blk_cov = report["targets"]["model:blk"]["coverage"]
    net_cov = report["targets"]["model:net"]["coverage"]
    assert blk_cov["all"]["clauses"] == 6 and net_cov["all"]["clauses"] == 7
    assert (net_cov["by_chapter"]["5.1"]["covered"], net_cov["by_chapter"]["5.1"]["unobservable"]) == (1, 1)
    assert net_cov["by_chapter"]["5.1"]["percent_covered"] == 50.0
    assert net_cov["by_chapter"]["5.1"]["percent_covered_observable"] == 100.0
    assert "5.2" not in net_cov["by_chapter"] and "5.1" not in blk_cov["by_chapter"]
    assert report["coverage"]["all"]["clauses"] == 8  # the union over both targets' types


def test_overall_coverage_unions_targets(catalogue):
    targets = {t: target(t) for t in ("model:blk", "model:net")}
    results = [result("a", "pass", [MUST], tid="model:blk"), result("a", "pass", [SHOULD], tid="model:net")]
    report = build_report(run_of(results, targets), catalogue)
    assert report["coverage"]["all"]["covered"] == 2
    assert report["targets"]["model:blk"]["coverage"]["all"]["covered"] == 1


def test_uncatalogued_clauses_do_not_count_in_coverage(catalogue):
    report = build_report(run_of([result("a", "pass", ["dev.nowhere.1"])]), catalogue)
    assert report["coverage"]["all"]["covered"] == 0 and report["coverage"]["all"]["clauses"] == 5


# --- JSON ------------------------------------------------------------------------------------------


def mixed_run():
    targets = {"model:blk": target(offered_features=(1 << 100) | 1), "model:net": target("model:net")}
    return run_of([
        result("a", "pass", [MUST]),
        result("b", "violation", [SHOULD]),
        result("c", "skip", [MAY], message="feature not offered"),
        result("a", "harness-error", [MUST], tid="model:net"),
    ], targets, extras={"benchmarks": {"kick_ns": 120}})


def test_json_has_required_fields(tmp_path, catalogue):
    report = build_report(mixed_run(), catalogue)
    path = write_json(report, tmp_path / "deep" / "dir" / "report.json")
    data = json.loads(Path(path).read_text())
    assert data["schema"] == SCHEMA
    assert set(data) >= {"verdict", "targets", "results", "clauses", "coverage", "run", "waivers", "extras"}
    for t in data["targets"].values():
        assert t["verdict"] in ("CONFORMANT", "NON-CONFORMANT", "INCONCLUSIVE")
    for r in data["results"]:
        assert set(r) >= {"nodeid", "target", "clauses", "outcome", "message", "severity", "waivers"}
    for c in data["clauses"]:
        assert set(c) >= {"id", "section", "level", "status", "sections", "per_target"}
    assert [c["id"] for c in data["clauses"]] == [c.id for c in catalogue]
    assert data["targets"]["model:blk"]["offered_features"] == (1 << 100) | 1  # no 64-bit truncation
    assert data["extras"] == {"benchmarks": {"kick_ns": 120}}
    assert data == report  # plain JSON: survives a round trip unchanged


def test_json_is_deterministic(tmp_path, catalogue):
    run = mixed_run()
    shuffled = copy.deepcopy(run)
    random.Random(4).shuffle(shuffled["results"])
    shuffled["targets"] = dict(reversed(list(shuffled["targets"].items())))
    a = write_json(build_report(run, catalogue), tmp_path / "a.json").read_bytes()
    b = write_json(build_report(shuffled, catalogue), tmp_path / "b.json").read_bytes()
    assert a == b
    nodeids = [(r["nodeid"], r["target"]) for r in json.loads(a)["results"]]
    assert nodeids == sorted(nodeids)


def test_json_holds_no_html(catalogue):
    run = mixed_run()
    run["targets"]["model:blk"]["description"] = "<b>raw</b>"
    text = json.dumps(build_report(run, catalogue))
    assert "<b>raw</b>" in text and "&lt;" not in text


def test_input_run_is_not_mutated(catalogue):
    run = mixed_run()
    before = copy.deepcopy(run)
    build_report(run, catalogue, [waiver(clause=SHOULD)])
    assert run == before


def test_rejects_unknown_run_schema(catalogue):
    with pytest.raises(ValueError, match="schema"):
        build_report(run_of([], schema="virtio-conformance/run/99"), catalogue)


def test_default_catalogue():
    report = build_report(run_of([result("a", "pass", ["dev.basic.device-status-field.1"])]))
    assert report["coverage"]["all"]["clauses"] > 100
    assert status(report, "dev.basic.device-status-field.1") == "pass"


# --- HTML ------------------------------------------------------------------------------------------

EVIL = "<script>alert(1)</script>"
QUOTES = "\"&'"


class _TagCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs, self.scripts = [], 0

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v) for k, v in attrs]
        self.scripts += tag == "script"


def evil_report(catalogue):
    targets = {"model:blk": target(description=EVIL, bus_name=QUOTES, config={"serial": EVIL, "model": QUOTES},
                                   offered_feature_names=[EVIL])}
    bad = result("a", "violation", [MUST], message=EVIL)
    bad.update(expected=QUOTES, observed=EVIL, longrepr=f"Traceback\n{EVIL}")
    skipped = result("b", "skip", [SHOULD], message=f"skip {EVIL}")
    errored = result("c", "harness-error", [MAY], message=EVIL)
    waived = result("d", "violation", [ADMIN_SHOULD_NOT], message=EVIL)
    run = run_of([bad, skipped, errored, waived], targets, extras={EVIL: {QUOTES: EVIL}, "list": [{"k": EVIL}]})
    run["environment"]["hostname"] = EVIL
    return build_report(run, catalogue, [waiver(entry=3, clause=ADMIN_SHOULD_NOT, reason=EVIL, evidence=QUOTES)])


def test_html_escapes_device_strings(tmp_path, catalogue):
    page = write_html(evil_report(catalogue), tmp_path / "out" / "report.html").read_text()
    assert "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;&amp;&#39;" in page
    waived = page[page.index('id="waived"'):page.index('id="harness-errors"')]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in waived and "&#34;&amp;&#39;" in waived
    parser = _TagCollector()
    parser.feed(page)
    assert parser.scripts == 1  # only our own filter script


def test_html_is_self_contained(catalogue):
    page = render_html(evil_report(catalogue))
    assert "http://" not in page and "https://" not in page
    parser = _TagCollector()
    parser.feed(page)
    assert not [a for a in parser.attrs if a[1] == "src"]
    assert all(v.startswith("#") for tag, k, v in parser.attrs if k == "href")
    assert not [a for a in parser.attrs if a[0] == "link"]
    assert not re.search(r"@import|url\(", page)


def test_template_has_no_urls():
    for path in TEMPLATES.rglob("*"):
        if path.is_file():
            assert "http" not in path.read_text(), path


def test_html_shows_verdicts_clauses_and_sections(catalogue):
    targets = {t: target(t) for t in ("model:blk", "model:net", "model:rng")}
    results = [
        result("a", "violation", [MUST], tid="model:blk"),
        result("b", "violation", [SHOULD], tid="model:blk"),
        result("a", "harness-error", [MUST], tid="model:net"),
        result("a", "pass", [MUST], tid="model:rng"),
        result("s", "skip", [MAY], tid="model:rng", message="feature not offered"),
    ]
    run = run_of(results, targets, extras={"benchmarks": {"kick_ns": 120}})
    page = render_html(build_report(run, catalogue, [waiver(target="model:rng", clause=SHOULD)]))
    for verdict in ("NON-CONFORMANT", "INCONCLUSIVE", "CONFORMANT"):
        assert verdict in page
    for clause in catalogue:
        assert f'id="clause-{clause.id}"' in page
    for section in ("targets", "failures", "warnings", "waived", "harness-errors", "skipped", "clauses",
                    "coverage", "waivers", "environment", "extras"):
        assert f'id="{section}"' in page
    assert "not covered" in page and "feature not offered" in page and "kick_ns" in page
    assert "pytest --target model:blk" in page


def test_html_tags_balance(catalogue):
    page = render_html(evil_report(catalogue))
    void = {"meta", "input", "br", "hr", "img", "link"}

    class Checker(html.parser.HTMLParser):
        stack: list = []

        def handle_starttag(self, tag, attrs):
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()

    checker = Checker()
    checker.stack = []
    checker.feed(page)
    assert checker.stack == []


# --- the run journal and its fold (reports/journal.py) ------------------------------------------------

from reports.journal import JOURNAL_SCHEMA, JournalWriter, fold, read_journal  # noqa: E402


def journal(*records, final=True, selection=None, selected=None, universe=None):
    recs = [{"record": "header", "schema": JOURNAL_SCHEMA, "started": "2026-11-24T22:00:00Z", "started_ts": 1.0,
             "command_line": ["pytest"], "targets": [{"id": "model:blk", "spec": "model:blk", "transport": "model"}],
             "selection": selection or {"criteria": [], "text": "", "partial": False, "targets_not_run": []}}]
    if selected is not None:
        recs.append({"record": "collection", "selected": selected})
    if universe is not None:
        recs.append({"record": "universe", "tests": universe})
    recs += list(records)
    if final:
        recs.append({"record": "final", "finished": "2026-11-24T22:00:12Z", "finished_ts": 13.0, "exitstatus": 0})
    return recs


def phase(name, kind, when, clauses=(MUST,), **over):
    r = result(name, kind, clauses)
    return {"record": "result", **r, "when": when, **over}


def test_fold_setup_pass_without_call_is_not_run(catalogue):
    recs = journal({"record": "start", "nodeid": "suites/test_x.py::a[model:blk]", "target": "model:blk"},
                   phase("a", "pass", "setup"),
                   {"record": "event", "kind": "interrupted", "signal": "SIGTERM", "message": "interrupted by SIGTERM"},
                   selected=[{"nodeid": "suites/test_x.py::a[model:blk]", "target": "model:blk", "clauses": [MUST]},
                             {"nodeid": "suites/test_x.py::b[model:blk]", "target": "model:blk", "clauses": [SHOULD]}])
    report = build_report(fold(recs), catalogue)
    (r,) = report["results"]
    assert r["kind"] == "not-run" and "interrupted" in r["message"]
    assert report["verdict"] == "INCONCLUSIVE"
    assert report["verdict_text"] == ("INCONCLUSIVE on 0 of 2 tests (interrupted by SIGTERM at test 1 of 2, "
                                      "in suites/test_x.py::a[model:blk])")
    assert report["counts"]["not_run"] == 1 and report["counts"]["passed"] == 0
    assert status(report, MUST) == "not-run" and status(report, SHOULD) == "not-run"  # neither reached a verdict
    assert report["coverage"]["all"]["covered"] == 0


def test_fold_without_final_record_keeps_results_and_is_interrupted(catalogue):
    recs = journal(phase("a", "pass", "setup"), phase("a", "pass", "call"), phase("a", "pass", "teardown"),
                   {"record": "start", "nodeid": "suites/test_x.py::b[model:blk]", "target": "model:blk"}, final=False)
    run = fold(recs)
    assert not run["completion"]["complete"] and run["completion"]["interrupted"]
    report = build_report(run, catalogue)
    kinds = {r["nodeid"]: r["kind"] for r in report["results"]}
    assert kinds == {"suites/test_x.py::a[model:blk]": "pass", "suites/test_x.py::b[model:blk]": "not-run"}
    assert report["verdict"] == "INCONCLUSIVE" and "no final record" in report["verdict_text"]


def test_fold_worker_crash_is_a_harness_error_naming_the_test(catalogue):
    nodeid = "suites/test_x.py::a[model:blk]"
    recs = journal(phase("a", "pass", "setup"), phase("a", "harness-error", "???", message="worker died"),
                   {"record": "event", "kind": "worker-crashed", "worker": "gw0", "nodeid": nodeid,
                    "message": f"worker gw0 crashed in test {nodeid}"})
    report = build_report(fold(recs), catalogue)
    assert report["results"][0]["kind"] == "harness-error"
    assert report["verdict"] == "INCONCLUSIVE" and f"worker gw0 crashed in test {nodeid}" in report["verdict_text"]


def test_unfinished_run_with_must_violation_stays_non_conformant(catalogue):
    recs = journal(phase("a", "violation", "call"), {"record": "event", "kind": "interrupted", "signal": "SIGINT"})
    report = build_report(fold(recs), catalogue)
    assert report["verdict"] == "NON-CONFORMANT" and "interrupted by SIGINT" in report["verdict_text"]


def test_selection_scopes_the_verdict_and_names_clauses_left_out(catalogue):
    a, b = "suites/test_x.py::a[model:blk]", "suites/test_x.py::b[model:blk]"
    recs = journal(phase("a", "pass", "setup"), phase("a", "pass", "call"), phase("a", "pass", "teardown"),
                   selection={"criteria": ["-k a"], "text": "-k a", "partial": True, "targets_not_run": []},
                   selected=[{"nodeid": a, "target": "model:blk", "clauses": None}],
                   universe=[{"nodeid": a, "target": "model:blk", "clauses": [MUST]},
                             {"nodeid": b, "target": "model:blk", "clauses": [SHOULD]}])
    report = build_report(fold(recs), catalogue)
    assert report["verdict"] == "CONFORMANT"
    assert report["verdict_text"] == "CONFORMANT on 1 of 2 tests (selection: -k a)"
    assert report["scope"]["clauses_not_selected"] == [SHOULD] and report["scope"]["partial"]
    assert report["targets"]["model:blk"]["verdict_text"] == report["verdict_text"]
    assert status(report, SHOULD) == "not-run" and status(report, MAY) == "not-covered"
    assert "-k a" in render_html(report)


def test_complete_run_says_the_bare_word(catalogue):
    recs = journal(phase("a", "pass", "setup"), phase("a", "pass", "call"), phase("a", "pass", "teardown"))
    report = build_report(fold(recs), catalogue)
    assert report["verdict"] == report["verdict_text"] == "CONFORMANT" and report["scope"]["complete"]


def test_journal_round_trip_and_torn_last_line(tmp_path):
    w = JournalWriter(tmp_path / "j.jsonl")
    for rec in journal(phase("a", "pass", "call"), final=False):
        w.write(rec)
    with open(tmp_path / "j.jsonl", "a") as fh:
        fh.write('{"record": "result", "nodeid": "tor')  # the writer was killed mid-line
    w.close()
    assert read_journal(tmp_path / "j.jsonl") == w.records
    (tmp_path / "bad.jsonl").write_text('{"record": "result"}\n')
    with pytest.raises(ValueError, match="header"):
        read_journal(tmp_path / "bad.jsonl")
