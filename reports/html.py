"""Render a report dict as ONE self-contained HTML file (inline CSS, no external resources).

Everything a device supplies (config strings, messages, descriptions) reaches the page only through
jinja2 autoescaping; the template never marks data safe.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from .charts import throughput_rows, throughput_svg

TEMPLATES = Path(__file__).with_name("templates")
TEMPLATE = "conformance.html.j2"

STATUS_LABELS = {
    "fail": "FAIL", "waived": "waived", "pass": "pass", "skip": "skip",
    "not-run": "not run", "not-covered": "not covered", "unobservable": "unobservable",
    "not-applicable": "n/a",
}


def _hex(value):
    return f"0x{value:x}" if isinstance(value, int) and not isinstance(value, bool) else value


def _pretty_json(value) -> str:
    # Returned as plain str so autoescape applies (jinja's own tojson is marked safe).
    return json.dumps(value, indent=2, sort_keys=True)


def _columns(rows) -> list:
    """Union of keys of a list of dicts, first-seen order: the header of a generic table."""
    return list(dict.fromkeys(k for row in rows for k in row))


def _skip_groups(results, kind: str = "skip") -> list:
    """Skipped (or not-run) results grouped by reason, most common first (a skip names its reason:
    docs/DESIGN.md "What conformant means in a report")."""
    groups: dict[str, list] = {}
    for r in results:
        if r["kind"] == kind:
            reason = (r.get("message") or r.get("longrepr") or "no reason given").strip()
            groups.setdefault(reason, []).append(r)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # not select_autoescape: the template's .j2 suffix would turn it off
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(hex=_hex, pretty_json=_pretty_json, columns=_columns)
    env.globals.update(status_label=lambda s: STATUS_LABELS.get(s, s), skip_groups=_skip_groups)
    # extras["throughput"] (benchmarks/ring_throughput.py): a table and an inline SVG whose every
    # text node reports/charts.py escapes itself before marking the SVG safe.
    env.globals.update(throughput_rows=throughput_rows, throughput_chart=throughput_svg)
    return env


def render_html(report: dict) -> str:
    clause_index = {c["id"]: c for c in report["clauses"]}
    return environment().get_template(TEMPLATE).render(report=report, clause_index=clause_index)
