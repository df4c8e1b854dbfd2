"""``python3 -m reports rebuild JOURNAL -o report.html [--json report.json] [--waivers FILE]``

Turns a run journal (the JSON lines a run writes beside its report) into the usual HTML and JSON
report, with the same fold the run itself uses: a journal without its final record (the harness was
killed) comes out INCONCLUSIVE, interrupted, with every result it holds.
"""

from __future__ import annotations

import argparse
import sys

from . import build_report, load_waivers, write_html, write_json
from .journal import fold, read_journal


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m reports", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rb = sub.add_parser("rebuild", help="a report from a run journal")
    rb.add_argument("journal")
    rb.add_argument("-o", "--html", metavar="PATH", help="write the HTML report here")
    rb.add_argument("--json", metavar="PATH", help="write the JSON report here")
    rb.add_argument("--waivers", metavar="FILE", help="judge with this waiver file")
    a = ap.parse_args(argv)
    if not (a.html or a.json):
        ap.error("rebuild: give -o PATH (HTML) and/or --json PATH")
    try:
        records = read_journal(a.journal)
        waivers = load_waivers(a.waivers) if a.waivers else None
    except (OSError, ValueError) as e:
        print(f"python3 -m reports: {e}", file=sys.stderr)
        return 4
    report = build_report(fold(records), waivers=waivers)
    if a.html:
        write_html(report, a.html)
    if a.json:
        write_json(report, a.json)
    print(f"verdict: {report['verdict_text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
