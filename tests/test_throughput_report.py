"""Throughput figures in the report (reports/charts.py, fixtures/extras.py, the template section) and
the batch API's validation of garbage in the used ring: the same DeviceViolation subclass and clause
as get_buf raises, naming the offending values, and never an IndexError or a read outside guest
memory, whatever the device wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from fixtures.extras import load_throughput
from reports import build_report, render_html
from reports.charts import throughput_rows, throughput_svg
from virtio import constants as C
from virtio.buffers import SgArray
from virtio.errors import DeviceViolation, InvalidUsedId, InvalidUsedIdx, InvalidUsedLen
from virtio.memory import GuestMemory
from virtio.split_queue import CLAUSE_IN_ORDER, CLAUSE_USED_ID, CLAUSE_USED_IDX, CLAUSE_USED_LEN, SplitVirtqueue

ROOT = Path(__file__).resolve().parents[1]
EVIL = '<script>alert(1)</script>'


def row(layout="split", mode="notify", device="rng", batch=64, descs=2.1e6, p50=30.0, p99=45.5, **extra):
    return {"layout": layout, "mode": mode, "device": device, "batch": batch, "descs_per_s": descs,
            "p50_us": p50, "p99_us": p99, **extra}


ROWS = [row(batch=b, descs=d) for b, d in ((1, 4e4), (16, 6e5), (64, 2.1e6), (256, 6e6))] + [
    row(mode="threaded", batch=b, descs=d) for b, d in ((1, 8e3), (64, 2e5))
] + [row(device="blk", batch=16, descs=6.7e4, api="per-buffer")]


def run_with(extras: dict) -> dict:
    return {"schema": "virtio-conformance/run/1", "started": "2025-01-01T00:00:00Z", "targets": {},
            "results": [], "extras": extras}


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


# -- the SVG ---------------------------------------------------------------------------------------
def test_svg_has_no_external_references():
    svg = str(throughput_svg(ROWS, goal=2e6))
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    p = _Tags()
    p.feed(svg)
    assert not {"script", "image", "use", "a", "foreignobject", "style", "link"} & set(p.tags)
    assert not [a for a in p.attrs if a[1] in ("href", "xlink:href", "src") or a[1].startswith("on")]
    assert "http" not in svg and "url(" not in svg and "@import" not in svg
    assert p.tags.count("circle") == len(ROWS) and p.tags.count("polyline") == 2  # blk has one point


def test_svg_escapes_every_text_node():
    rows = [row(device=EVIL, mode='"&\'<b>'), row(device=EVIL, mode='"&\'<b>', batch=16)]
    svg = str(throughput_svg(rows))
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    p = _Tags()
    p.feed(svg)
    assert "script" not in p.tags and "b" not in p.tags
    assert any(EVIL in t for t in p.text)  # the text survives, as text


def test_svg_and_rows_ignore_malformed_values():
    assert str(throughput_svg("junk")) == "" and throughput_rows({"a": 1}) == []
    bad = [row(descs="<b>"), row(batch=0), row(p50=float("nan")), {"layout": "split"}, "x", row(descs=-5)]
    assert throughput_rows(bad) == []
    assert str(throughput_svg(bad + [row()])).count("<circle") == 1


def test_html_renders_table_and_chart():
    page = render_html(build_report(run_with({"throughput": ROWS, "throughput_setup": {"command": EVIL}})))
    section = page[page.index('<section id="throughput">'):]
    section = section[: section.index("</section>")]
    assert "<svg" in section and "2,100,000" in section and "6,000,000" in section
    assert section.count("<tr>") == len(ROWS) + 1
    assert 'href="#throughput"' in page
    assert "alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page
    # throughput is not rendered a second time in the generic extras; its setup is
    extras = page[page.index('<section id="extras">'):]
    assert "throughput_setup" in extras and "descs_per_s" not in extras


def test_html_escapes_device_names_in_table_and_chart():
    page = render_html(build_report(run_with({"throughput": [row(device=EVIL), row(device=EVIL, batch=1)]})))
    assert "alert(1)</script>" not in page
    p = _Tags()
    p.feed(page)
    assert p.tags.count("script") == 1  # only the report's own filter script


def test_malformed_throughput_falls_back_to_generic_extras():
    page = render_html(build_report(run_with({"throughput": EVIL})))
    assert '<section id="throughput">' not in page and '<section id="extras">' in page
    assert "&lt;script&gt;" in page


# -- getting figures into a report ----------------------------------------------------------------------
def test_load_throughput_validates(tmp_path):
    good = tmp_path / "tp.json"
    good.write_text(json.dumps({"schema": "x", "setup": {"notify_cpu": 0}, "rows": ROWS}))
    rows, setup = load_throughput(good)
    assert [r["batch"] for r in rows] == [r["batch"] for r in ROWS] and setup == {"notify_cpu": 0}
    assert rows[-1]["api"] == "per-buffer"
    for data in ({"rows": [{"layout": "split"}]}, [row(descs="fast")], {"rows": "x"}, [row(p99=float("inf"))]):
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(ValueError):
            load_throughput(tmp_path / "bad.json")


def test_throughput_json_option_reaches_the_html(tmp_path):
    tp = tmp_path / "tp.json"
    tp.write_text(json.dumps({"rows": ROWS, "setup": {"command": "ring_throughput.py --json tp.json"}}))
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    html = tmp_path / "r.html"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "fixtures.plugin", "-p", "fixtures.extras",
         f"--throughput-json={tp}", f"--conformance-html={html}", str(tmp_path / "test_one.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    page = html.read_text()
    assert '<section id="throughput">' in page and "<svg" in page and "2,100,000" in page
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "fixtures.plugin", "-p", "fixtures.extras",
         f"--throughput-json={tmp_path / 'missing.json'}", str(tmp_path / "test_one.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 4 and "--throughput-json" in r.stderr  # a usage error, not a silent empty report


# -- the batch API against garbage in the used ring -----------------------------------------------------
NUM = 16


def queue(in_order=False):
    mem = GuestMemory(1 << 20)
    features = (1 << C.VIRTIO_F_IN_ORDER) if in_order else 0
    vq = SplitVirtqueue(mem, 0, NUM, lambda q: None, features=features, name="garbage")
    base = mem.alloc(8 * 8, 8)
    heads = vq.add_batch((), (SgArray(base + 8 * np.arange(8, dtype=np.uint64), 8),), 8).tolist()
    vq.kick()
    return vq, heads


def device_writes(vq, elems, used_idx=None):
    """Play a (bad) device: used elems from slot last_used_idx on, then used idx."""
    for j, (uid, ulen) in enumerate(elems):
        slot = (vq.last_used_idx + j) % vq.num
        vq.ring.used_ring[slot, 0] = uid
        vq.ring.used_ring[slot, 1] = ulen
    vq.ring.used_idx[0] = (vq.last_used_idx + len(elems)) & 0xFFFF if used_idx is None else used_idx


def free_id(vq, heads):
    return next(i for i in range(NUM) if i not in heads)


# (name, elems(heads, vq) -> list, used_idx or None, expected class, clause, text the message names)
CASES = [
    ("id == queue size", lambda h, q: [(h[0], 8), (NUM, 8)], None, InvalidUsedId, CLAUSE_USED_ID, f"id {NUM} "),
    ("id far out of range", lambda h, q: [(0xFFFF_FFFF, 8)], None, InvalidUsedId, CLAUSE_USED_ID, "id 4294967295 "),
    ("id just past the sentinel", lambda h, q: [(NUM + 1, 0)], None, InvalidUsedId, CLAUSE_USED_ID, f"id {NUM + 1} "),
    ("id not in flight", lambda h, q: [(h[1], 8), (free_id(q, h), 8)], None, InvalidUsedId, CLAUSE_USED_ID, "not the head"),
    ("duplicate id in a batch", lambda h, q: [(h[2], 8), (h[3], 8), (h[2], 8)], None, InvalidUsedId, CLAUSE_USED_ID,
     "id 2 at used ring slot 2"),
    ("len too big", lambda h, q: [(h[0], 8), (h[1], 9)], None, InvalidUsedLen, CLAUSE_USED_LEN, "len 9 for id"),
    ("len 2^32-1", lambda h, q: [(h[0], 0xFFFF_FFFF)], None, InvalidUsedLen, CLAUSE_USED_LEN, "len 4294967295"),
    ("used idx jump", lambda h, q: [(h[0], 8)], 9, InvalidUsedIdx, CLAUSE_USED_IDX, "used idx 9 (9 new)"),
    ("used idx far ahead", lambda h, q: [], 0x8000, InvalidUsedIdx, CLAUSE_USED_IDX, "used idx 32768"),
    ("first bad elem wins", lambda h, q: [(h[0], 8), (h[1], 100), (NUM + 5, 8)], None, InvalidUsedLen, CLAUSE_USED_LEN,
     "len 100"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("api", ["get_used_batch", "get_buf", "wait_used_batch"])
def test_garbage_in_used_ring(case, api):
    name, elems, used_idx, cls, clause, text = case
    vq, heads = queue()
    assert heads == list(range(8))  # a fresh queue hands out ids in table order
    device_writes(vq, elems(heads, vq), used_idx)
    with pytest.raises(DeviceViolation) as info:
        if api == "get_used_batch":
            vq.get_used_batch()
        elif api == "wait_used_batch":
            vq.wait_used_batch(8, 0.2)
        else:
            while vq.get_buf() is not None:
                pass
    exc = info.value
    assert type(exc) is cls and exc.clause == clause, repr(exc)
    assert text in str(exc), str(exc)
    assert vq.broken is exc
    with pytest.raises(cls):  # the queue stays broken, as Linux's BAD_RING leaves it
        vq.get_used_batch()


def test_batch_max_count_leaves_bad_elems_for_later():
    vq, heads = queue()
    device_writes(vq, [(heads[0], 8), (heads[1], 8), (99, 8)])
    ids, lens = vq.get_used_batch(2)
    assert ids.tolist() == heads[:2] and lens.tolist() == [8, 8]
    with pytest.raises(InvalidUsedId):
        vq.get_used_batch(2)


def test_in_order_garbage():
    """2.7.9: an elem naming heads[3] is a batch of 4, at the offset of its first buffer, and
    moves used idx by 4; by fewer it is an IN_ORDER violation, and an elem at the next batch's
    offset naming a buffer the batch already covered is a bad id."""
    vq, heads = queue(in_order=True)
    device_writes(vq, [(heads[3], 8)])  # used idx moved by 1, the elem says 4
    with pytest.raises(InvalidUsedIdx) as info:
        vq.get_used_batch()
    assert info.value.clause == CLAUSE_IN_ORDER and "batch of 4" in str(info.value)
    vq, heads = queue(in_order=True)
    device_writes(vq, [(heads[1], 8), (0xBAD, 0), (heads[0], 8)])  # slot 1 skipped, slot 2 names heads[0]
    with pytest.raises(InvalidUsedId) as info:
        vq.get_used_batch()
    assert f"id {heads[0]} at used ring slot 2" in str(info.value)
    vq, heads = queue(in_order=True)
    device_writes(vq, [(heads[3], 5)], used_idx=4)
    ids, lens = vq.get_used_batch()
    assert ids.tolist() == heads[:4] and lens.tolist() == [8, 8, 8, 5]  # the skipped: used completely


def test_validation_reads_only_the_used_ring():
    """Garbage ids never become guest memory accesses: the batch API reads the used ring (numpy
    views), indexes only the queue's own arrays, and those only with bounds-checked ids."""
    vq, heads = queue()
    reads = []
    orig = vq.mem.read
    vq.mem.read = lambda addr, n: reads.append((addr, n)) or orig(addr, n)
    device_writes(vq, [(0xFFFF_FFFF, 0xFFFF_FFFF)] * 3)
    with pytest.raises(InvalidUsedId):
        vq.get_used_batch()
    assert reads == []
    assert re.search(r"expected one of heads \[0, 1, 2, 3, 4, 5, 6, 7\]", str(vq.broken))


@pytest.mark.parametrize("num", [64, 8192], ids=["count-path", "mark-path"])
def test_repeated_id_detected_and_state_kept(num):
    """Both ways of spotting a repeated id (counting freed rooms for small queues, a mark per
    position for big ones) raise on the repeat and leave the in-flight state untouched."""
    mem = GuestMemory(4 << 20)
    vq = SplitVirtqueue(mem, 0, num, lambda q: None, name="repeat")
    base = mem.alloc(8 * 40, 8)
    heads = vq.add_batch((), (SgArray(base + 8 * np.arange(40, dtype=np.uint64), 8),), 40).tolist()
    vq.kick()
    before = (vq.num_in_flight, vq.num_free, sorted(vq.in_flight))
    device_writes(vq, [(h, 8) for h in heads[:10]] + [(heads[3], 8)])
    with pytest.raises(InvalidUsedId) as info:
        vq.get_used_batch()
    assert f"id {heads[3]} at used ring slot 10" in str(info.value) and "earlier in this batch" in str(info.value)
    assert (vq.num_in_flight, vq.num_free, sorted(vq.in_flight)) == before and vq.last_used_idx == 0
    vq2 = SplitVirtqueue(mem, 1, num, lambda q: None, name="fine")
    h2 = vq2.add_batch((), (SgArray(base + 8 * np.arange(40, dtype=np.uint64), 8),), 40).tolist()
    device_writes(vq2, [(h, 8) for h in reversed(h2)])
    ids, lens = vq2.get_used_batch()
    assert ids.tolist() == h2[::-1] and vq2.num_free == num and vq2.num_in_flight == 0
