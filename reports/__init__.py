"""Conformance reports: judge a run's raw facts against the clause catalogue and write HTML and JSON.

    report = build_report(run, waivers=load_waivers("waivers.toml"))
    write_json(report, "out/report.json"); write_html(report, "out/report.html")

The rules live in ``reports.verdict`` (docs/DESIGN.md "What conformant means in a report").
"""

from __future__ import annotations

import json
from pathlib import Path

from .build import RUN_SCHEMA, SCHEMA
from .build import build_report as _build_report
from .html import render_html
from .verdict import STATUSES, VERDICTS
from .waivers import Waiver, load_waivers

__all__ = [
    "build_report", "write_html", "write_json", "load_waivers", "render_html", "Waiver",
    "SCHEMA", "RUN_SCHEMA", "STATUSES", "VERDICTS",
]


def build_report(run: dict, catalogue=None, waivers=None) -> dict:
    """Judge ``run`` (schema virtio-conformance/run/1) into a plain-JSON report dict.

    catalogue: a virtio.clauses.Catalogue (default: the bundled one). waivers: a list of Waiver,
    or a path to a waiver file.
    """
    if isinstance(waivers, (str, Path)):
        waivers = load_waivers(waivers)
    return _build_report(run, catalogue=catalogue, waivers=waivers)


def _write_text(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # backslashreplace: a lone surrogate from a device string must not cost us the whole report.
    with open(path, "w", encoding="utf-8", errors="backslashreplace", newline="\n") as fh:
        fh.write(text)
    return path


def to_json(report: dict) -> str:
    """Stable text (sorted keys, fixed indent) so two reports diff line by line."""
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(report: dict, path) -> Path:
    return _write_text(path, to_json(report))


def write_html(report: dict, path) -> Path:
    return _write_text(path, render_html(report))
