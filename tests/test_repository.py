"""The repository keeps its own promises: the docs the code cites exist and hold what is cited,
the package list of pyproject.toml covers every package of the tree, and ruff finds nothing.

Doc references look like ``docs/DESIGN.md "Heading"`` (a section by its heading) and
``docs/BACKENDS.md #N`` (a numbered note); any ``docs/NAME.md`` must exist, and a path in backquotes
in README.md or docs/ must name a file or folder of the tree. The old ways of citing the design
notes, files that lived outside the repository, are refused wherever they appear.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
TEXT_SUFFIXES = {".py", ".md", ".toml", ".ini", ".cfg", ".txt", ".j2", ".rst"}
TEXT_FILES = {".ci/run"}
PRODUCT = ("virtio", "targets", "fixtures", "suites", "reports")  # the packages an install ships
SKIP_DIRS = {"__pycache__", "build", "dist", "node_modules"}

DOC_FILE = re.compile(r"\bdocs/([A-Za-z0-9_-]+\.md)\b")
# A heading cited in double quotes right after the file name; a docstring or comment may wrap it.
DOC_SECTION = re.compile(r"\bdocs/([A-Za-z0-9_-]+\.md)\s*\n?\s*(?:#\s+)?\"([^\"]+)\"")
DOC_NOTE = re.compile(r"\bdocs/([A-Za-z0-9_-]+\.md) #(\d+)\b")
STALE = [
    (re.compile(r"\bDESIGN\b(?!\.md)"), 'the design notes are docs/DESIGN.md (cite a section as docs/DESIGN.md "Heading")'),
    (re.compile(r"(?<![\w/])backends\.md"), "the back-end notes are docs/BACKENDS.md (cite a note as docs/BACKENDS.md #N)"),
    (re.compile(r"/work/shared\b|\bshared/(?:DESIGN|backends|vfio)"), "notes outside the repository"),
]
BACKQUOTED = re.compile(r"`(\.?[A-Za-z0-9_]+/[^`\s:]*)")  # a path, up to a test id's ::
GENERATED = (".html", ".json", ".jsonl")  # outputs a command in the docs writes


@cache
def tree_files() -> tuple[str, ...]:
    """The tree's files, tracked or new (not ignored), as paths relative to the root."""
    if (ROOT / ".git").exists():
        r = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, timeout=60)
        if r.returncode == 0:
            return tuple(sorted(p for p in r.stdout.decode().split("\0") if p and (ROOT / p).is_file()))
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")]
        out += [Path(dirpath, f).relative_to(ROOT).as_posix() for f in filenames]
    return tuple(sorted(out))


def text_files() -> list[str]:
    return [p for p in tree_files() if (Path(p).suffix in TEXT_SUFFIXES or p in TEXT_FILES) and p != THIS]


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def headings(doc: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", (ROOT / "docs" / doc).read_text(), re.M)]


def test_repository_doc_references_resolve():
    problems = []
    for path in text_files():
        text = (ROOT / path).read_text(errors="replace")
        for m in DOC_FILE.finditer(text):
            if not (ROOT / "docs" / m.group(1)).is_file():
                problems.append(f"{path}:{line_of(text, m.start())}: docs/{m.group(1)} does not exist")
        for m in DOC_SECTION.finditer(text):
            doc, heading = m.group(1), re.sub(r"\s*\n\s*(?:#\s*)?", " ", m.group(2)).strip()
            if (ROOT / "docs" / doc).is_file() and heading not in headings(doc):
                problems.append(f'{path}:{line_of(text, m.start())}: docs/{doc} has no heading "{heading}"')
        for m in DOC_NOTE.finditer(text):
            doc, n = m.group(1), m.group(2)
            if (ROOT / "docs" / doc).is_file() and not any(h.startswith(f"{n}. ") for h in headings(doc)):
                problems.append(f"{path}:{line_of(text, m.start())}: docs/{doc} has no note #{n} (a heading '{n}. ...')")
        for pattern, why in STALE:
            for m in pattern.finditer(text):
                problems.append(f"{path}:{line_of(text, m.start())}: {m.group(0)!r}: {why}")
    assert not problems, "doc references that do not resolve:\n" + "\n".join(problems)


def test_repository_paths_in_docs_exist():
    tops = {p.split("/", 1)[0] for p in tree_files() if "/" in p}
    problems = []
    for path in ["README.md", *(p for p in tree_files() if p.startswith("docs/") and p.endswith(".md"))]:
        text = (ROOT / path).read_text()
        for m in BACKQUOTED.finditer(text):
            ref = m.group(1).rstrip(".,:;)")
            if ref.split("/", 1)[0] not in tops or ref.endswith(GENERATED) or "*" in ref:
                continue  # not a path of this tree (e.g. QEMU's docs/interop/...), or an output
            if ref.startswith("docs/interop/"):
                continue  # QEMU's vhost-user specification, cited by its path in QEMU's tree
            if not (ROOT / ref).exists():
                problems.append(f"{path}:{line_of(text, m.start())}: {ref} does not exist")
    assert not problems, "\n".join(problems)


def test_repository_doc_notes_are_numbered_in_order():
    """A note keeps its number (the code cites it): new ones go at the end, none is skipped."""
    numbers = [int(h.split(".", 1)[0]) for h in headings("BACKENDS.md") if re.match(r"\d+\. ", h)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_repository_packages_listed_in_pyproject():
    """pyproject.toml lists the packages explicitly (the layout is flat): a new package must be added
    there, or an installed copy lacks it."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {Path(p).parent.as_posix().replace("/", ".") for p in tree_files()
             if p.endswith("/__init__.py") and p.split("/", 1)[0] in PRODUCT}
    assert listed == found, f"missing from pyproject.toml: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"


def test_repository_package_data_covers_data_files():
    """Every file in a shipped package that is not Python source (catalogues, templates) is package
    data, or an installed copy cannot open it."""
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    packages = set(_pyproject()["tool"]["setuptools"]["packages"])
    missing = []
    for p in tree_files():
        path = Path(p)
        if path.suffix in (".py", ".pyc") or path.name == ".gitkeep" or p.split("/", 1)[0] not in PRODUCT:
            continue
        owner = next((a for a in (path.parents[i] for i in range(len(path.parents) - 1))
                      if a.as_posix().replace("/", ".") in packages), None)
        if owner is None:
            continue
        rel = path.relative_to(owner)
        if not any(rel.match(g) for g in data.get(owner.as_posix().replace("/", "."), ())):
            missing.append(p)
    assert not missing, f"not package data in pyproject.toml ([tool.setuptools.package-data]): {missing}"


def test_repository_plugin_entry_point_is_the_conftest_plugin():
    """The installed copy loads the plugin conftest.py loads, under the module's own name (so the two
    never register it twice)."""
    eps = _pyproject()["project"]["entry-points"]["pytest11"]
    conftest = {}
    exec((ROOT / "conftest.py").read_text(), conftest)
    assert list(eps.items()) == [(m, m) for m in conftest["pytest_plugins"]], (eps, conftest["pytest_plugins"])


def test_repository_suites_run_from_an_installed_copy(tmp_path):
    """``python -m suites`` (README: how an installed copy runs) from another directory, on a copy of
    the shipped packages alone (no pyproject.toml, no conftest.py; the plugin named as its entry point
    would name it): a checkout's test ids, and a selection counted against the whole suites."""
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    for package in PRODUCT:
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(site), PYTEST_PLUGINS="fixtures.harness")

    def run(*args):
        cmd = [sys.executable, "-m", "suites", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--target", "model:rng", *args]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    every = [line for line in run("--co").stdout.splitlines() if "::" in line]
    assert every and all(i.startswith("suites/") for i in every), every[:5]
    run("-k", "test_device_status", "--conformance-json", "r.json")
    report = json.loads((work / "r.json").read_text())
    assert {r["nodeid"].split("::")[0] for r in report["results"]} == {"suites/test_device_status.py"}
    assert report["scope"]["tests"]["total"] == len(every), report["scope"]


def test_lint_ruff_clean():
    """ruff, with the rule set of pyproject.toml ([tool.ruff.lint]), finds nothing in the tree."""
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: it is the `test` extra (pip install -e '.[test]'; "
                    "python3 vc.py selftest installs it)", pytrace=False)
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"ruff check . found:\n{r.stdout}{r.stderr}"
