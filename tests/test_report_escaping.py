"""Issue 10 item 6: device-supplied strings reach the HTML report as text, never as live markup.

The suites run, as a user would, against devices whose strings are markup: the correct devices of
tests/unusual/hostile_strings.py (a blk serial read with GET_ID, console port names, an fs tag)
and the mutants that quote such strings in their failures (targets/mutants: console-markup-port-name,
fs-markup-tag). Each report is parsed (html.parser): it may hold only the elements the template
writes, its one <script> unchanged, no on* attribute, no javascript: URL, no comment; and the
hostile strings read back, once the entities are decoded, as the text of the page.

The check is shown to fail: the same reports rendered with autoescaping turned off, and with the
report's JSON pasted into a <script> as it is, are both caught.
"""

from __future__ import annotations

import html.parser
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jinja2
import pytest

from fixtures.plugin import _identity
from reports.html import TEMPLATE, TEMPLATES, render_html
from targets.model.blk import BlkDevice
from targets.model.transport import ModelTransport
from targets.mutants.console import MARKUP_NAME
from targets.mutants.fs import FsMarkupTag as MutantMarkupTag
from tests.unusual import hostile_strings as H
from virtio import constants as C

from .test_mutants import _env, harness_errors

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 120
# The suites that meet the strings: any test records the identity (serial, config tag); the
# multiport test makes the console send its PORT_NAMEs; the fs config test judges the tag.
SUITES = ("suites/test_config_space.py", "suites/blk", "suites/console/test_multiport.py", "suites/fs/test_fs_config.py")
_H = "python:tests.unusual.hostile_strings"
HOSTILE = (f"{_H}:BlkMarkupSerial", f"{_H}:ConsoleMarkupPortNames", f"{_H}:FsMarkupTag")
CLEAN = ("model:blk", "model:console", "model:fs")
MUTANTS = ("model:console-markup-port-name", "model:fs-markup-tag")


class Page(html.parser.HTMLParser):
    """What a rendered report holds: elements, attributes, scripts, comments and its text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: Counter = Counter()
        self.attrs: list[tuple[str, str, str | None]] = []
        self.scripts: list[str] = []
        self.comments: list[str] = []
        self.decls: list[str] = []
        self._text: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self._in_script = False

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self._text.append(data)

    def handle_comment(self, data):
        self.comments.append(data)

    def handle_decl(self, decl):
        self.decls.append(decl)

    @property
    def text(self) -> str:
        return "".join(self._text)


def template_tags() -> set[str]:
    """Every element name the template writes (the throughput SVG is not in these reports)."""
    source = (TEMPLATES / TEMPLATE).read_text()
    return {t.lower() for t in re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", source)}


def template_script() -> str:
    """The body of the template's one <script>, as the page must carry it."""
    source = (TEMPLATES / TEMPLATE).read_text()
    return source[source.index("<script>") + len("<script>"):source.index("</script>")]


def live_markup(page_text: str, clean: Page | None = None) -> list[str]:
    """What a report holds that the template did not write; [] when the page is clean."""
    page = Page(page_text)
    problems = []
    foreign = set(page.tags) - template_tags()
    if clean is not None:
        foreign |= set(page.tags) - set(clean.tags)
    if foreign:
        problems.append(f"elements the template does not write: {sorted(foreign)}")
    if page.scripts != [template_script()]:
        problems.append(f"{len(page.scripts)} <script> elements, or one the template did not write")
    problems += [f"event handler attribute <{tag} {k}=...>" for tag, k, _ in page.attrs if k.startswith("on")]
    problems += [f"javascript: URL in <{tag} {k}>" for tag, k, v in page.attrs
                 if v and re.sub(r"[\s\x00-\x1f]", "", v).lower().startswith("javascript:")]
    # html.parser reads an unclosed "<!--" as text where a browser hides the rest of the page, and
    # escaped text never holds a raw "<": so the source itself is searched too.
    if page.comments or "<!--" in page_text:
        problems.append("an HTML comment (the template writes none)")
    lowered = page_text.lower()
    if lowered.count("<script") != 1 or lowered.count("</script") != 1:
        problems.append(f"{lowered.count('<script')} '<script' and {lowered.count('</script')} '</script' in the source")
    if page.decls != ["DOCTYPE html"]:
        problems.append(f"declarations {page.decls}")
    return problems


def run_suites(targets, tmp_path: Path, name: str) -> tuple[dict, str]:
    """SUITES against ``targets`` in a child pytest: (the JSON report, the HTML report)."""
    out_json, out_html = tmp_path / f"{name}.json", tmp_path / f"{name}.html"
    cmd = [sys.executable, "-m", "pytest", *SUITES, "-p", "no:cacheprovider", "-q", "--device-timeout", "1",
           "--conformance-json", str(out_json), "--conformance-html", str(out_html)]
    for t in targets:
        cmd += ["--target", t]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if not (out_json.exists() and out_html.exists()):
        pytest.fail(f"no report from {' '.join(cmd[2:])} (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out_json.read_text()), out_html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("escaping")
    return {kind: run_suites(targets, tmp, kind) for kind, targets in
            (("clean", CLEAN), ("hostile", HOSTILE), ("mutants", MUTANTS))}


def test_clean_report_passes_the_check(reports):
    report, page = reports["clean"]
    assert report["verdict"] == "CONFORMANT", report.get("verdict_text")
    assert live_markup(page) == []


def test_hostile_devices_conformant_and_shown_as_text(reports):
    report, page = reports["hostile"]
    assert not harness_errors(report)
    assert report["verdict"] == "CONFORMANT", report.get("verdict_text")
    assert live_markup(page, Page(reports["clean"][1])) == []
    blk, console, fs = (report["targets"][t] for t in HOSTILE)
    assert blk["serial"] == H.SERIAL.decode() and blk["serial_error"] is None
    assert fs["config"]["tag"] == H.TAG.decode()
    # The port names reach no conformant report (only failures quote them), but the device did
    # send them: its multiport tests ran and passed.
    multiport = {r["kind"] for r in report["results"] if r["target"] == HOSTILE[1] and "test_multiport" in r["nodeid"]}
    assert console["device_type"] == "console" and multiport == {"pass"}
    text = Page(page).text
    for shown in (H.SERIAL.decode(), H.TAG.decode()):
        assert shown in text, f"{shown!r} is not shown as text"


def test_clean_blk_serial_in_identity(reports):
    report, page = reports["clean"]
    assert report["targets"]["model:blk"]["serial"] == "vconf-model-blk"
    assert "vconf-model-blk" in Page(page).text


def test_quoted_in_failures_shown_as_text(reports):
    """The mutants' failures quote the port name (in the message) and show the tag (identity)."""
    report, page = reports["mutants"]
    assert report["verdict"] == "NON-CONFORMANT"
    assert live_markup(page) == []
    quoted = [r["message"] for r in report["results"] if r["kind"] == "violation" and MARKUP_NAME in r["message"]]
    assert quoted, "no failure of console-markup-port-name quotes its port name"
    text = Page(page).text
    assert MARKUP_NAME in text
    assert MutantMarkupTag.tag.split(b"\0")[0].decode() in text


# -- the check can fail ------------------------------------------------------------------------------
def _unescaped(report: dict, monkeypatch) -> str:
    real = jinja2.Environment
    monkeypatch.setattr(jinja2, "Environment", lambda **kw: real(**{**kw, "autoescape": False}))
    return render_html(report)


@pytest.mark.parametrize("kind", ["hostile", "mutants"])
def test_check_catches_an_unescaped_report(reports, kind, monkeypatch):
    report, page = reports[kind]
    assert live_markup(page) == []
    problems = " | ".join(live_markup(_unescaped(report, monkeypatch)))
    if kind == "hostile":  # the serial's <img onerror>, the tag's </script><svg onload><!--
        for expect in ("'img'", "'svg'", "event handler attribute <img onerror", "<svg onload", "an HTML comment", "'</script'"):
            assert expect in problems, problems
    else:  # the port name's <script>
        assert "<script> elements" in problems, problems


def test_check_catches_json_pasted_into_a_script(reports):
    """A report that embedded its JSON in a <script> as it is would let a device string end it."""
    report, page = reports["hostile"]
    blob = json.dumps(report)
    assert "</script>" in blob
    pasted = page.replace("</body>", f'<script type="application/json">{blob}</script></body>')
    assert live_markup(pasted)
    # Escaped as JSON allows (\u003c): the blob stays inside its element; only the count differs.
    safe = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    assert Page(page.replace("</body>", f'<script type="application/json">{safe}</script></body>')).scripts[1] == safe


# -- the serial in the identity (fixtures/plugin.py) ---------------------------------------------------
class _BlkSerial(BlkDevice):
    answer = (C.VIRTIO_BLK_S_UNSUPP, b"")

    def _do_get_id(self, sector, payload, data_len):
        return self.answer


@pytest.mark.parametrize("answer, serial, error", [
    ((C.VIRTIO_BLK_S_UNSUPP, b""), None, "GET_ID completed with VIRTIO_BLK_S_UNSUPP"),
    ((C.VIRTIO_BLK_S_OK, b"ab\xff<\0junk".ljust(20, b"\0")), "ab\\xff<", None),  # not ASCII: shown, not decoded
])
def test_identity_serial(answer, serial, error):
    dev = _BlkSerial()
    dev.answer = answer
    ident = _identity(ModelTransport(dev, "model:blk-serial"))
    assert (ident.get("serial"), ident.get("serial_error")) == (serial, error)
    assert ident["config"]["capacity"] == dev.capacity  # the rest of the identity is kept
