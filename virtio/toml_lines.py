"""Where in a TOML text a table or a key is, so an error in a data file (waivers, target inventory)
names its line: tomllib gives positions only for syntax errors, never for a valid document.

Best effort by design: a header or key written in an unusual form falls back to the table's line.
"""

from __future__ import annotations

import re
import tomllib


def decode(text: str) -> tuple[dict | None, int | None, str | None]:
    """(document, None, None), or (None, line, message) when ``text`` is not valid TOML."""
    try:
        return tomllib.loads(text), None, None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"at line (\d+)", msg)
        # tomllib says "at end of document" for an unclosed value: name the last line instead
        return None, int(m[1]) if m else max(1, len(text.splitlines())), msg


def array_table_lines(text: str, name: str) -> list[int]:
    """Line of each ``[[name]]`` header, in order (the n-th entry of the array is the n-th line)."""
    head = re.compile(rf"^\s*\[\[\s*{re.escape(name)}\s*\]\]")
    return [no for no, line in enumerate(text.splitlines(), 1) if head.match(line)]


def table_lines(text: str, prefix: str) -> dict[str, int]:
    """Line of each ``[prefix.NAME]`` header, by NAME (bare or quoted)."""
    head = re.compile(rf'^\s*\[\s*{re.escape(prefix)}\s*\.\s*("([^"]+)"|\'([^\']+)\'|[A-Za-z0-9_-]+)\s*\]')
    lines = {}
    for no, line in enumerate(text.splitlines(), 1):
        m = head.match(line)
        if m:
            lines.setdefault(m[2] or m[3] or m[1], no)
    return lines


def key_line(text: str, table_line: int, key: str) -> int:
    """Line of ``key =`` in the table whose header is on ``table_line`` (1-based); else that line."""
    lines = text.splitlines()
    start = max(table_line - 1, 0)
    for no in range(start, len(lines)):
        if no > start and lines[no].lstrip().startswith("["):
            break
        if re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", lines[no]):
            return no + 1
    return table_line
