"""Self-tests of the clause catalogue: well-formed, complete against the spec keyword counts, own words."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from virtio.clauses import (
    DEFAULT_PATH,
    DEVICE_TYPE_CHAPTERS,
    GROUPS,
    KEYWORDS,
    LEVELS,
    SPEC_VERSIONS,
    SYNONYMS,
    CatalogueError,
    clause_id,
    device_type_paths,
    level_of,
    load_catalogue,
    vhost_user_clause_id,
)

COUNTS_DIR = Path(__file__).parent / "data" / "spec-counts"
COUNTS_FILES = {"1.4": "counts-v1.4-cs01.md", "1.3": "counts-v1.3-wd02.md"}
SPEC_TAGS = {"1.4": "v1.4-cs01", "1.3": "v1.3-wd02"}
SPEC_REPO = Path("/work/.mirror/oasis-tcs+virtio-spec/repo")
# The spec chapters the catalogue covers: 2, 3, 6, and each device type's chapter it has a file for.
CHAPTERS = ("2", "3", "6", *sorted({c.chapter for c in load_catalogue() if c.group == "device"}))
COUNT_COLUMNS = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY", "other")


@pytest.fixture(scope="module")
def full_catalogue():
    return load_catalogue()


@pytest.fixture(scope="module")
def catalogue(full_catalogue):
    """The keyword statements: what the counts files and the spec text are checked against."""
    return full_catalogue.normative()


# --- well-formedness -------------------------------------------------------------------------------


def test_loads_and_is_cached(full_catalogue):
    assert len(full_catalogue) > 0
    assert load_catalogue() is full_catalogue


def test_ids_unique_and_derived(catalogue):
    ids = [c.id for c in catalogue]
    assert len(ids) == len(set(ids))
    for c in catalogue:
        assert c.id == clause_id(c.label, c.ordinal)
        assert c.id in catalogue and catalogue[c.id] is c


def test_clause_id_examples():
    basic = "devicenormative:Basic Facilities of a Virtio Device"
    assert clause_id(basic + " / Feature Bits", 1) == "dev.basic.feature-bits.1"
    assert (clause_id(basic + " / Virtqueues / Virtqueue Reset / Virtqueue Reset", 2)
            == "dev.basic.virtqueues.virtqueue-reset.virtqueue-reset.2")
    assert clause_id("devicenormative:Reserved Feature Bits", 3) == "dev.reserved-features.3"
    assert (clause_id("devicenormative:General Initialization And Device Operation / Device Suspend", 1)
            == "dev.init.device-suspend.1")
    with pytest.raises(ValueError):
        clause_id("drivernormative:Reserved Feature Bits", 1)
    assert (clause_id("devicenormative:Device Types / Network Device / Device Operation / Packet Transmission", 2)
            == "dev.net.device-operation.packet-transmission.2")
    assert (clause_id("devicenormative:Device Types / File System Device / Device configuration layout", 1)
            == "dev.fs.device-configuration-layout.1")
    with pytest.raises(ValueError):
        clause_id("devicenormative:Device Types / Widget Device / Device Operation", 1)
    with pytest.raises(ValueError):
        clause_id("devicenormative:Network Device / Device Operation", 1)


def test_ordinals_dense_per_block(catalogue):
    for label, members in catalogue.by_block().items():
        assert [c.ordinal for c in members] == list(range(1, len(members) + 1)), label


def test_levels_and_groups(catalogue):
    for c in catalogue:
        if c.group == "definition":
            continue
        assert c.level in LEVELS, c.id
        assert c.keywords and all(k in KEYWORDS for k in c.keywords), c.id
        assert c.level == level_of(c.keywords), c.id
        assert c.group in GROUPS, c.id
        assert set(c.sections) == set(SPEC_VERSIONS), c.id
        assert c.section("1.4") is not None, c.id


def test_summaries_one_short_line(catalogue):
    for c in catalogue:
        assert c.summary.strip() and "\n" not in c.summary and len(c.summary) < 200, c.id


@pytest.mark.parametrize("path", [DEFAULT_PATH, *device_type_paths()], ids=lambda p: p.name)
def test_file_order_is_section_then_ordinal(path):
    keys = [(tuple(int(p) for p in c.section("1.4").split(".")), c.ordinal)
            for c in load_catalogue(path).normative()]
    assert keys == sorted(keys)


def test_device_type_files_hold_their_chapter_only():
    for path in device_type_paths():
        clauses = list(load_catalogue(path))
        assert clauses, path.name
        assert all(c.group == "device" for c in clauses), path.name
        types = {c.device_type for c in clauses}
        assert len(types) == 1 and path.stem.removeprefix("clauses_device_").startswith(next(iter(types))), path.name
        for c in clauses:
            assert c.section("1.4").startswith(DEVICE_TYPE_CHAPTERS[c.device_type] + "."), c.id
            assert c.observable or c.unobservable_because.strip(), c.id


def test_malformed_file_rejected(tmp_path):
    good = (
        '[[clause]]\nid = "dev.reserved-features.1"\nlabel = "devicenormative:Reserved Feature Bits"\n'
        'ordinal = 1\nkeywords = ["MUST"]\nlevel = "MUST"\nsections = { "1.4" = "6.2", "1.3" = "6.2" }\n'
        'group = "core"\nfeatures = []\nsummary = "x"\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(good)
    assert len(load_catalogue(path)) == 1
    for broken in (
        good + good,                                    # duplicate id
        good.replace("features.1", "features.2"),       # id not derived from label/ordinal
        good.replace('level = "MUST"', 'level = "MUSTN\'T"'),
        good.replace('level = "MUST"', 'level = "MAY"'),  # inconsistent with keywords
        good.replace('"1.3" = "6.2"', '"1.3" = "six"'),
        good.replace("ordinal = 1", "ordinal = 2").replace("features.1", "features.2"),  # not 1..n
    ):
        path.write_text(broken)
        with pytest.raises(CatalogueError):
            load_catalogue(path)


# --- completeness against the keyword counts --------------------------------------------------------


def _device_rows(version):
    """Device-side rows of the chapter 2/3/6 tables of a counts file: section -> {column: count}."""
    rows, chapter = {}, None
    for line in (COUNTS_DIR / COUNTS_FILES[version]).read_text().splitlines():
        heading = re.match(r"#+ .*\(section ([\d.]+)\)\s*$", line)
        if heading:
            chapter = heading.group(1)
            continue
        if chapter not in CHAPTERS or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 9 or not re.fullmatch(r"[\d.]+", cells[0]) or cells[2] != "device":
            continue  # header, separator, totals or driver rows
        rows[cells[0]] = dict(zip(COUNT_COLUMNS, map(int, cells[3:9])))
    return rows


def _tally(clauses):
    counts = Counter(dict.fromkeys(COUNT_COLUMNS, 0))
    for c in clauses:
        for k in c.keywords:
            counts["other" if k in SYNONYMS else k] += 1
    return dict(counts)


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_keyword_counts_match(catalogue, version):
    rows = _device_rows(version)
    assert rows, f"no device rows parsed for {version}"
    by_section = {}
    for c in catalogue:
        if c.section(version) is not None:
            by_section.setdefault(c.section(version), []).append(c)
    for section, expected in rows.items():
        assert section in by_section, f"{version} §{section} missing from catalogue"
        assert _tally(by_section[section]) == expected, f"{version} §{section}"
    # and nothing extra claims to exist in this version
    assert set(by_section) <= set(rows), f"{version}: sections without counts row: {set(by_section) - set(rows)}"


def test_every_block_has_a_1_4_row(catalogue):
    rows = _device_rows("1.4")
    for label, members in catalogue.by_block().items():
        assert {c.section("1.4") for c in members} <= set(rows), label


# --- developer aids that read the spec sources --------------------------------------------------------

_SECTIONING = re.compile(
    r"\\(chapter|section|subsection|subsubsection|paragraph|subparagraph|devicenormative|drivernormative)\b")
_KEYWORD = re.compile(r"\b(MUST\s+NOT|MUST|SHOULD\s+NOT|SHOULD|MAY|REQUIRED|SHALL|RECOMMENDED)\b")


def _git_show(tag, name):
    return subprocess.run(["git", "-C", str(SPEC_REPO), "show", f"{tag}:{name}"],
                          capture_output=True, text=True, check=True).stdout


def _flat_source(tag, name="content.tex"):
    text = _git_show(tag, name)
    return re.sub(r"\\input\{([^}]+)\}", lambda m: _flat_source(tag, m.group(1)), text)


@pytest.fixture(scope="module")
def spec_blocks():
    """version -> {label: block text} for every \\devicenormative block, straight from the sources."""
    if not SPEC_REPO.is_dir() or shutil.which("git") is None:
        pytest.skip(f"spec sources not available at {SPEC_REPO}")
    result = {}
    for version, tag in SPEC_TAGS.items():
        text = re.sub(r"(?<!\\)%.*", "", _flat_source(tag))  # LaTeX comments are not spec text
        blocks = {}
        for m in re.finditer(r"\\devicenormative\{\\\w+\}\{[^}]*\}\{([^}]*)\}", text):
            end = _SECTIONING.search(text, m.end())
            label = "devicenormative:" + re.sub(r"\s+", " ", m.group(1)).strip()
            blocks[label] = text[m.end():end.start() if end else len(text)]
        result[version] = blocks
    return result


def _words(text):
    text = re.sub(r"\\[a-zA-Z]+", " ", text)  # drop LaTeX command names, keep their arguments
    return re.findall(r"[a-z0-9_]+", text.lower())


def test_summaries_are_not_copied_prose(catalogue, spec_blocks):
    run = 8
    copied = []  # report every offender at once, so one edit pass fixes them all
    for c in catalogue:
        spec = " " + " ".join(_words(spec_blocks["1.4"][c.label])) + " "
        words = _words(c.summary)
        for i in range(len(words) - run + 1):
            phrase = " ".join(words[i:i + run])
            if f" {phrase} " in spec:
                copied.append(f"{c.id}: {phrase!r}")
                break
    assert not copied, "summaries copying spec text:\n" + "\n".join(copied)


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_keywords_follow_spec_order(catalogue, spec_blocks, version):
    """Concatenating the statements' keywords in ordinal order reproduces the block's keyword sequence."""
    for label, members in catalogue.by_block().items():
        present = [c for c in members if c.section(version) is not None]
        if not present:
            continue
        expected = [re.sub(r"\s+", " ", k) for k in _KEYWORD.findall(spec_blocks[version][label])]
        assert [k for c in present for k in c.keywords] == expected, f"{version} {label}"


def test_definition_entries(full_catalogue):
    """Duties stated as definitions: hand-given def.* ids, no keywords, a 1.4 section."""
    defs = [c for c in full_catalogue if c.group == "definition"]
    assert defs
    for c in defs:
        assert c.id.startswith("def.") and not c.keywords and c.label.startswith("definition:"), c.id
        assert c.section("1.4") is not None, c.id


# --- the vhost-user group (QEMU docs/interop/vhost-user.rst) -------------------------------------------


@pytest.fixture(scope="module")
def vhost_user(full_catalogue):
    return full_catalogue.vhost_user()


def test_vhost_user_group_is_separate(full_catalogue, catalogue, vhost_user):
    assert len(vhost_user) >= 30
    assert all(c.group == "vhost-user" for c in vhost_user)
    assert not any(c.id.startswith("vu.") for c in catalogue)  # the VIRTIO checks never see them
    assert len(full_catalogue) == len(catalogue) + len(vhost_user) + sum(c.group == "definition" for c in full_catalogue)


def test_vhost_user_ids_derived_and_dense(vhost_user):
    for c in vhost_user:
        assert c.id == vhost_user_clause_id(c.label, c.ordinal), c.id
        assert c.sections == dict.fromkeys(SPEC_VERSIONS), c.id
    for label, members in vhost_user.by_block().items():
        assert [c.ordinal for c in members] == list(range(1, len(members) + 1)), label
    assert vhost_user_clause_id("vhost-user:Ring states", 4) == "vu.ring-states.4"
    with pytest.raises(ValueError):
        vhost_user_clause_id("devicenormative:Ring states", 1)


def test_vhost_user_levels_and_inference(vhost_user):
    for c in vhost_user:
        assert c.level in LEVELS, c.id
        assert c.inferred == (not c.keywords), c.id
        if c.keywords:
            assert c.level == level_of(c.keywords), c.id
    assert any(c.inferred for c in vhost_user) and any(not c.inferred for c in vhost_user)


def test_vhost_user_malformed_entries_rejected(tmp_path):
    good = (
        '[[clause]]\nid = "vu.ring-states.1"\nlabel = "vhost-user:Ring states"\nordinal = 1\n'
        'keywords = ["MUST"]\nlevel = "MUST"\ninferred = false\nfeatures = []\nsummary = "x"\n'
    )
    path = tmp_path / "vu.toml"
    path.write_text(good)
    assert load_catalogue(path)["vu.ring-states.1"].group == "vhost-user"
    for broken in (
        good.replace("inferred = false", "inferred = true"),          # keyword given, yet "inferred"
        good.replace("vu.ring-states.1", "vu.ring-state.1"),          # id not derived
        good.replace("features = []", 'features = ["REPLY_ACK"]'),   # not a feature bit name
        good.replace('level = "MUST"', 'level = "MAY"'),
        good.replace("features = []\n", "features = []\ngroup = \"core\"\n"),  # unknown field
    ):
        path.write_text(broken)
        with pytest.raises(CatalogueError):
            load_catalogue(path)
