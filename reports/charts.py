"""Inline SVG charts for the HTML report: no scripts, no external references, every text node escaped.

The report template autoescapes everything and marks no report data safe. The one exception is the
SVG built here: it is returned as ``markupsafe.Markup`` only after every piece of text that came from
the data (device names, modes, numbers) went through ``markupsafe.escape``; all other markup is
written by this module from numbers it computed itself.
"""

from __future__ import annotations

import math

from markupsafe import Markup, escape

# One row of extras["throughput"], as benchmarks/ring_throughput.py --json writes it.
THROUGHPUT_KEYS = ("layout", "mode", "device", "batch", "descs_per_s", "p50_us", "p99_us")
_TEXT_KEYS = ("layout", "mode", "device")
_NUM_KEYS = ("batch", "descs_per_s", "p50_us", "p99_us")

_PALETTE = ("#1f5fa8", "#c2571a", "#2b8a3e", "#8e3fa8", "#b8860b", "#c2185b", "#00838f", "#5d4037")
_DASH = {"notify": "", "threaded": "6 4"}


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def throughput_rows(value) -> list[dict]:
    """The well-formed rows of an extras["throughput"] value (anything else gives [])."""
    if not isinstance(value, list):
        return []
    rows = []
    for raw in value:
        if not isinstance(raw, dict) or any(k not in raw for k in THROUGHPUT_KEYS):
            continue
        row = {k: str(raw[k]) for k in _TEXT_KEYS}
        nums = {k: _number(raw[k]) for k in _NUM_KEYS}
        if any(v is None for v in nums.values()) or nums["batch"] < 1 or nums["descs_per_s"] <= 0:
            continue
        row.update(nums)
        row["batch"] = int(nums["batch"])
        if "api" in raw:
            row["api"] = str(raw["api"])
        rows.append(row)
    return rows


def si(x: float) -> str:
    """1234567 -> '1.23M' (chart labels)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _t(value) -> str:
    """Escape a text node or attribute value taken from the data."""
    return str(escape(str(value)))


def throughput_svg(value, *, width: int = 760, height: int = 360, goal: float | None = None) -> Markup:
    """A line chart of descriptors/s against batch size (log scale), one line per
    (layout, mode, device); empty Markup when there are no usable rows."""
    rows = throughput_rows(value)
    if not rows:
        return Markup("")
    series: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        series.setdefault((r["layout"], r["mode"], r["device"]), {})[r["batch"]] = r
    batches = sorted({r["batch"] for r in rows})
    values = [r["descs_per_s"] for r in rows] + ([goal] if goal else [])
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10
    left, right, top, bottom = 64, 230, 16, 46
    pw, ph = width - left - right, height - top - bottom

    def x_of(batch: int) -> float:
        if len(batches) == 1:
            return left + pw / 2
        return left + pw * batches.index(batch) / (len(batches) - 1)

    def y_of(v: float) -> float:
        return top + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'font-family="system-ui, sans-serif" font-size="11">',
        "<title>Descriptors per second by batch size (log scale)</title>",
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    decade = lo
    while decade <= hi * 1.0001:
        y = y_of(decade)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_t(si(decade))}</text>')
        decade *= 10
    for b in batches:
        x = x_of(b)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{_t(b)}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">batch size (buffers per kick)</text>')
    out.append(
        f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" transform="rotate(-90 14 {top + ph / 2:.1f})">'
        "descriptors / s</text>"
    )
    if goal:
        y = y_of(goal)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#b3261e" stroke-dasharray="2 3"/>')
        out.append(f'<text x="{left + pw - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#b3261e">goal {_t(si(goal))}/s</text>')
    for i, (key, points) in enumerate(sorted(series.items())):
        color = _PALETTE[i % len(_PALETTE)]
        dash = _DASH.get(key[1], "2 2")
        pts = [(x_of(b), y_of(points[b]["descs_per_s"]), points[b]) for b in batches if b in points]
        label = " ".join(key)
        out.append(f"<g><title>{_t(label)}</title>")
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
        for x, y, r in pts:
            tip = (f"{label}, batch {r['batch']}: {si(r['descs_per_s'])} descriptors/s, "
                   f"p50 {r['p50_us']:.1f} us, p99 {r['p99_us']:.1f} us")
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"><title>{_t(tip)}</title></circle>')
        ly = top + 14 + 16 * i
        lx = left + pw + 14
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 28}" y="{ly}">{_t(label)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return Markup("\n".join(out))
