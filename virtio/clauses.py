"""Catalogue of the device-side normative statements of VIRTIO 1.4 (and 1.3) that the harness checks.

Covers the "Device Requirements" blocks of spec chapters 2 (Basic Facilities, incl. 2.12/2.13 admin), 3 and 6
(clauses.toml), of the device-type chapters 5.x (clauses_device_<type>*.toml; group "device"), and, as the separate group "vhost-user", the back-end's duties from QEMU docs/interop/vhost-user.rst
(clauses_vhost_user.toml; ids "vu.<section>.<ordinal>").
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

LEVELS = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")
SPEC_VERSIONS = ("1.4", "1.3")  # 1.4 first: the current committee specification

# RFC 2119 synonyms the spec also uses; the counts files tally them as "other".
# They map onto the level they mean, so a clause's level stays one of LEVELS.
SYNONYMS = {"REQUIRED": "MUST", "SHALL": "MUST", "RECOMMENDED": "SHOULD"}
KEYWORDS = LEVELS + tuple(SYNONYMS)

GROUPS = ("core", "admin", "device", "definition", "vhost-user")
_VIRTIO_GROUPS = GROUPS[:3]  # the groups a keyword statement of the VIRTIO text may have

# Duties the spec states as definitions rather than keyword sentences (e.g. "id indicates the head
# entry of the descriptor chain"): a device that breaks them is still broken, so the catalogue
# keeps them, apart, with hand-given ids "def.<topic>.<name>" and no keywords.
DEFINITION_PREFIX = "definition:"
_DEF_ID_RE = re.compile(r"def(\.[a-z0-9-]+)+")

LABEL_PREFIX = "devicenormative:"

# First label component -> short key used in ids.  Every in-scope block (chapters 2, 3, 6) lives
# under one of these three; the admin blocks (2.12.x "Device groups / ..." and 2.13 "Administration
# virtqueues") are labelled under "Basic Facilities of a Virtio Device", so need no key of their own.
CHAPTER_KEYS = {
    "Basic Facilities of a Virtio Device": "basic",
    "General Initialization And Device Operation": "init",
    "Reserved Feature Bits": "reserved-features",
}

# Chapter 5, one block family per device type: labels "Device Types / <Type> Device / ...", ids
# "dev.<type>.<rest>.<n>" (dev.net.device-configuration-layout.1), group "device". The type key is
# the one the harness uses everywhere else (constants.DEVICE_TYPES, --target model:<type>).
DEVICE_TYPES_CHAPTER = "Device Types"
DEVICE_TYPE_KEYS = {
    "Network Device": "net",
    "Block Device": "blk",
    "Console Device": "console",
    "Entropy Device": "rng",
    "File System Device": "fs",
}
# The 1.4 section of each device type's chapter: coverage is figured per chapter.
DEVICE_TYPE_CHAPTERS = {"net": "5.1", "blk": "5.2", "console": "5.3", "rng": "5.4", "fs": "5.11"}

DEFAULT_PATH = Path(__file__).with_name("clauses.toml")
# One file per device type (or part of one), so each chapter's statements stay together.
DEVICE_TYPE_GLOB = "clauses_device_*.toml"
VHOST_USER_PATH = Path(__file__).with_name("clauses_vhost_user.toml")

# vhost-user back-end duties: not OASIS text, so no VIRTIO section numbers; the label carries the
# section title of vhost-user.rst, and the level is often inferred from plain prose ("inferred").
VHOST_USER_PREFIX = "vhost-user:"
_VU_FIELDS = ("id", "label", "ordinal", "keywords", "level", "inferred", "features", "summary")
_VU_FEATURE_RE = re.compile(r"VHOST_USER_F_PROTOCOL_FEATURES|VHOST_USER_PROTOCOL_F_[A-Z0-9_]+|VIRTIO_[A-Z0-9_]+")

_FIELDS = ("id", "label", "ordinal", "keywords", "level", "sections", "group", "features", "summary")
# Optional: a statement whose keeping no driver can see (what the device does inside, or towards the
# network or the host) says so, with the reason; it counts in its chapter's figures as unobservable.
_OPTIONAL_FIELDS = ("observable", "unobservable_because")
_SECTION_RE = re.compile(r"\d+(\.\d+)*")
_FEATURE_RE = re.compile(r"VIRTIO_[A-Z0-9_]+")
_ABSENT = "-"


class CatalogueError(Exception):
    """The catalogue file is malformed; the message names the entry at fault."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def clause_id(label: str, ordinal: int) -> str:
    """Stable id of the ordinal-th statement of a block: 'dev.<chapter>.<slug>...<ordinal>'.

    Derived from the label alone so ids never need to be invented by hand and survive renumbering
    of spec sections between versions.
    """
    if not label.startswith(LABEL_PREFIX):
        raise ValueError(f"label must start with {LABEL_PREFIX!r}: {label!r}")
    if not isinstance(ordinal, int) or isinstance(ordinal, bool) or ordinal < 1:
        raise ValueError(f"ordinal must be a positive int: {ordinal!r}")
    chapter, *rest = [part.strip() for part in label[len(LABEL_PREFIX):].split(" / ")]
    if chapter == DEVICE_TYPES_CHAPTER:
        device = rest.pop(0) if rest else ""
        if device not in DEVICE_TYPE_KEYS:
            raise ValueError(f"no device type key for {device!r}; add one to DEVICE_TYPE_KEYS")
        parts = [DEVICE_TYPE_KEYS[device]]
    else:
        try:
            parts = [CHAPTER_KEYS[chapter]]
        except KeyError:
            raise ValueError(f"no chapter key for {chapter!r}; add one to CHAPTER_KEYS") from None
    parts += [_slug(component) for component in rest]
    return "dev." + ".".join(parts) + f".{ordinal}"


def level_of(keywords) -> str:
    """The level a statement's keywords imply: MUST/MUST NOT > SHOULD/SHOULD NOT > MAY.

    Within a tier (MUST vs MUST NOT, SHOULD vs SHOULD NOT) the keyword appearing first wins, as
    both members of a tier bind equally hard.
    """
    levels = [SYNONYMS.get(k, k) for k in keywords]
    for tier in (("MUST", "MUST NOT"), ("SHOULD", "SHOULD NOT"), ("MAY",)):
        for level in levels:
            if level in tier:
                return level
    raise ValueError(f"no known keyword in {list(keywords)!r}")


@dataclass(frozen=True)
class Clause:
    id: str
    label: str
    ordinal: int
    level: str
    keywords: tuple[str, ...]
    # version -> section number, None where the statement does not exist in that version.
    # Excluded from hashing (dicts are unhashable) but still compared.
    sections: dict = field(hash=False)
    group: str
    features: tuple[str, ...]
    summary: str
    # True where the level is the catalogue's reading of prose that states no keyword (vhost-user).
    inferred: bool = False
    # False where no driver can see whether the device keeps the duty; the reason says why.
    observable: bool = True
    unobservable_because: str = ""

    @property
    def device_type(self) -> str | None:
        """The device type whose chapter states this clause ("net", "blk", ...), None for the
        device-independent chapters."""
        kind = self.id.split(".")[1]
        if self.group == "device" or (self.group == "definition" and kind in DEVICE_TYPE_CHAPTERS):
            return kind  # a def.<type>.* entry is a duty of that device type only
        return None

    @property
    def chapter(self) -> str:
        """The 1.4 chapter the clause belongs to: "2", "3", "6", or a device type's "5.x";
        "vhost-user" for the back-end duties."""
        if self.group == "vhost-user":
            return "vhost-user"
        if self.device_type is not None:
            return DEVICE_TYPE_CHAPTERS[self.device_type]
        section = self.sections.get("1.4") or next(s for s in self.sections.values() if s)
        return section.split(".")[0]

    def applies_to(self, device_type: str | None) -> bool:
        """Whether a device of this type (None: unknown) is bound by the clause: every device by the
        device-independent ones, only its own type by a chapter-5 one."""
        return self.device_type is None or self.device_type == device_type

    def section(self, version: str = "1.4") -> str | None:
        if version not in SPEC_VERSIONS:
            raise ValueError(f"unknown spec version {version!r}; known: {SPEC_VERSIONS}")
        return self.sections.get(version)


class Catalogue:
    """Clauses in file order, indexed by id."""

    def __init__(self, clauses):
        self.clauses: dict[str, Clause] = {}
        for clause in clauses:
            if clause.id in self.clauses:
                raise CatalogueError(f"duplicate id {clause.id!r}")
            self.clauses[clause.id] = clause
        # Ordinals must be exactly 1..n so ids stay dense and a gap reveals a dropped statement.
        for label, members in self.by_block().items():
            ordinals = sorted(c.ordinal for c in members)
            if ordinals != list(range(1, len(members) + 1)):
                raise CatalogueError(f"ordinals of block {label!r} are {ordinals}, expected 1..{len(members)}")

    def __getitem__(self, id: str) -> Clause:
        return self.clauses[id]

    def __contains__(self, id) -> bool:
        return id in self.clauses

    def __iter__(self):
        return iter(self.clauses.values())

    def __len__(self) -> int:
        return len(self.clauses)

    def normative(self) -> Catalogue:
        """The VIRTIO keyword statements only (definition and vhost-user entries left out)."""
        return Catalogue(c for c in self if c.group not in ("definition", "vhost-user"))

    def vhost_user(self) -> Catalogue:
        """The vhost-user back-end duties (group "vhost-user")."""
        return Catalogue(c for c in self if c.group == "vhost-user")

    def for_device(self, device_type: str | None) -> Catalogue:
        """The clauses a device of this type is bound by (a target's coverage is measured on these)."""
        return Catalogue(c for c in self if c.applies_to(device_type))

    def by_block(self) -> dict[str, list[Clause]]:
        """Normative statements grouped by requirement block (definition entries excluded)."""
        blocks: dict[str, list[Clause]] = {}
        for clause in self.clauses.values():
            if clause.group != "definition":
                blocks.setdefault(clause.label, []).append(clause)
        return blocks


def _parse_clause(n: int, raw: dict) -> Clause:
    where = f"clause #{n} ({raw.get('id', '?')})"

    def fail(msg):
        raise CatalogueError(f"{where}: {msg}")

    if isinstance(raw.get("label"), str) and raw["label"].startswith(VHOST_USER_PREFIX):
        return _parse_vhost_user(raw, fail)
    missing = [k for k in _FIELDS if k not in raw]
    unknown = [k for k in raw if k not in _FIELDS + _OPTIONAL_FIELDS]
    if missing:
        fail(f"missing field(s) {missing}")
    if unknown:  # a misspelt field would otherwise be silently dropped
        fail(f"unknown field(s) {unknown}")

    label, ordinal = raw["label"], raw["ordinal"]
    if not isinstance(label, str):
        fail("label must be a string")
    if label.startswith(DEFINITION_PREFIX):
        return _parse_definition(raw, fail)
    try:
        expected_id = clause_id(label, ordinal)
    except ValueError as exc:
        fail(str(exc))
    if raw["id"] != expected_id:
        fail(f"id does not match label/ordinal; expected {expected_id!r}")

    keywords = raw["keywords"]
    if not isinstance(keywords, list) or not keywords:
        fail("keywords must be a non-empty list")
    bad = [k for k in keywords if k not in KEYWORDS]
    if bad:
        fail(f"unknown keyword(s) {bad}")
    level = raw["level"]
    if level not in LEVELS:
        fail(f"unknown level {level!r}")
    if level != level_of(keywords):
        fail(f"level {level!r} inconsistent with keywords {keywords}; expected {level_of(keywords)!r}")

    raw_sections = raw["sections"]
    if not isinstance(raw_sections, dict) or set(raw_sections) != set(SPEC_VERSIONS):
        fail(f"sections must give exactly the versions {SPEC_VERSIONS}")
    sections = {}
    for version in SPEC_VERSIONS:  # keep 1.4 first whatever the file order
        value = raw_sections[version]
        if value == _ABSENT:
            sections[version] = None
        elif isinstance(value, str) and _SECTION_RE.fullmatch(value):
            sections[version] = value
        else:
            fail(f"bad section {value!r} for {version}")
    if all(v is None for v in sections.values()):
        fail("statement exists in no version")

    group = raw["group"]
    if group not in _VIRTIO_GROUPS:
        fail(f"group must be one of {_VIRTIO_GROUPS}")
    in_device_chapter = label[len(LABEL_PREFIX):].startswith(DEVICE_TYPES_CHAPTER + " /")
    if (group == "device") != in_device_chapter:
        fail('group is "device" exactly for the statements of the device-type chapters (5.x)')
    features, summary = _features_and_summary(raw, fail, _FEATURE_RE, "a list of VIRTIO_F_* names")
    observable, because = _observability(raw, fail)

    return Clause(
        id=raw["id"], label=label, ordinal=ordinal, level=level, keywords=tuple(keywords),
        sections=sections, group=group, features=tuple(features), summary=summary,
        observable=observable, unobservable_because=because,
    )


def _observability(raw: dict, fail) -> tuple[bool, str]:
    observable = raw.get("observable", True)
    because = raw.get("unobservable_because", "")
    if not isinstance(observable, bool):
        fail("observable must be true or false")
    if not isinstance(because, str) or "\n" in because:
        fail("unobservable_because must be a single line")
    if observable == bool(because.strip()):
        fail("unobservable_because is given, non-empty, exactly when observable = false")
    return observable, because


def _parse_definition(raw: dict, fail) -> Clause:
    """A 'definition:' entry: hand-given id, no keywords, explicit level, group 'definition'."""
    if not _DEF_ID_RE.fullmatch(raw["id"]):
        fail("definition ids look like def.<topic>.<name>")
    if raw["group"] != "definition" or raw["keywords"] != []:
        fail("definition entries have group 'definition' and no keywords")
    if raw["level"] not in LEVELS:
        fail(f"unknown level {raw['level']!r}")
    sections = {v: (None if raw["sections"].get(v, _ABSENT) == _ABSENT else raw["sections"][v]) for v in SPEC_VERSIONS}
    if not all(s is None or _SECTION_RE.fullmatch(s) for s in sections.values()):
        fail("bad section number")
    summary = raw["summary"]
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary:
        fail("summary must be a non-empty single line")
    return Clause(
        id=raw["id"], label=raw["label"], ordinal=raw["ordinal"], level=raw["level"], keywords=(),
        sections=sections, group="definition", features=tuple(raw["features"]), summary=summary,
    )


def _features_and_summary(raw: dict, fail, pattern, what: str) -> tuple[list, str]:
    features = raw["features"]
    if not isinstance(features, list) or not all(isinstance(f, str) and pattern.fullmatch(f) for f in features):
        fail(f"features must be {what}")
    summary = raw["summary"]
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary:
        fail("summary must be a non-empty single line")
    return features, summary


def vhost_user_clause_id(label: str, ordinal: int) -> str:
    """Stable id of the ordinal-th back-end duty of a vhost-user.rst section: 'vu.<slug>.<ordinal>'."""
    if not label.startswith(VHOST_USER_PREFIX) or not label[len(VHOST_USER_PREFIX):].strip():
        raise ValueError(f"label must be {VHOST_USER_PREFIX!r} + a section title: {label!r}")
    if not isinstance(ordinal, int) or isinstance(ordinal, bool) or ordinal < 1:
        raise ValueError(f"ordinal must be a positive int: {ordinal!r}")
    return f"vu.{_slug(label[len(VHOST_USER_PREFIX):])}.{ordinal}"


def _parse_vhost_user(raw: dict, fail) -> Clause:
    """A vhost-user back-end duty (vhost-user.rst): derived id, keywords as written (maybe none),
    a level given or inferred, protocol-feature names."""
    missing = [k for k in _VU_FIELDS if k not in raw]
    unknown = [k for k in raw if k not in _VU_FIELDS]
    if missing or unknown:
        fail(f"vhost-user entries have exactly the fields {_VU_FIELDS}; missing {missing}, unknown {unknown}")
    try:
        expected_id = vhost_user_clause_id(raw["label"], raw["ordinal"])
    except ValueError as exc:
        fail(str(exc))
    if raw["id"] != expected_id:
        fail(f"id does not match label/ordinal; expected {expected_id!r}")
    keywords, level, inferred = raw["keywords"], raw["level"], raw["inferred"]
    if not isinstance(keywords, list) or any(k not in KEYWORDS for k in keywords):
        fail("keywords must be a list of RFC 2119 keywords")
    if level not in LEVELS:
        fail(f"unknown level {level!r}")
    if not isinstance(inferred, bool) or inferred != (not keywords):
        fail("inferred is true exactly when the text states no keyword")
    if keywords and level != level_of(keywords):
        fail(f"level {level!r} inconsistent with keywords {keywords}; expected {level_of(keywords)!r}")
    features, summary = _features_and_summary(
        raw, fail, _VU_FEATURE_RE, "names of VHOST_USER_F_PROTOCOL_FEATURES, VHOST_USER_PROTOCOL_F_* or VIRTIO_F_* bits")
    return Clause(
        id=raw["id"], label=raw["label"], ordinal=raw["ordinal"], level=level, keywords=tuple(keywords),
        sections=dict.fromkeys(SPEC_VERSIONS), group="vhost-user", features=tuple(features),
        summary=summary, inferred=inferred,
    )


def _entries(path: Path) -> list:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: {exc}") from exc
    entries = data.get("clause")
    if not isinstance(entries, list) or not entries:
        raise CatalogueError(f"{path}: no [[clause]] entries")
    return entries


def _load(path: Path) -> Catalogue:
    return Catalogue(_parse_clause(n, raw) for n, raw in enumerate(_entries(path), 1))


@functools.lru_cache(maxsize=1)
def _load_default() -> Catalogue:
    # The VIRTIO statements (chapters 2, 3, 6, then each device type's), then the vhost-user group.
    entries = _entries(DEFAULT_PATH)
    for path in device_type_paths():
        entries += _entries(path)
    entries += _entries(VHOST_USER_PATH)
    return Catalogue(_parse_clause(n, raw) for n, raw in enumerate(entries, 1))


def device_type_paths() -> list[Path]:
    """The device-type catalogue files bundled with the harness, in name order."""
    return sorted(DEFAULT_PATH.parent.glob(DEVICE_TYPE_GLOB))


def load_catalogue(path=None) -> Catalogue:
    """Load and validate a catalogue; the bundled one (path=None) is parsed once per process."""
    if path is None:
        return _load_default()
    return _load(Path(path))
