"""The device suites ask the transport what it can do, never what it is (issue 9, item 4).

A suite that branches on ``ops.transport == "..."`` breaks silently for the next transport. So no
module of the device suites (suites/*.py, suites/stress/) compares a transport's name; it asks
``ops.has(CAPABILITY)`` (targets/config_ops.py names the capabilities). suites/vhost_user/ is the
vhost-user transport's own protocol suite and is left out. That suites import no transport at all
is tests/test_import_graph.py's rule (the layers).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from targets.config_ops import CAPABILITIES, ConfigOps
from targets.model.transport import ModelTransport
from targets.vhost_user.frontend import VhostUserTransport

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
EXEMPT = ("vhost_user",)  # transport-specific suites: they test the transport's protocol itself
# Names transports have or will have (targets/registry.py kinds, ConfigOps.transport values, the
# spec's transports of chapter 4): comparing against any of them is asking for a name.
TRANSPORT_NAMES = {"model", "python", "file", "vhost-user", "vhost_user", "vfio", "pci", "virtio-pci", "mmio", "ccw"}
NAME_ATTRS = {"transport", "bus_name"}


def device_suite_modules() -> list[Path]:
    return sorted(p for p in SUITES.rglob("*.py") if not set(p.relative_to(SUITES).parts[:-1]) & set(EXEMPT))


def _asks_for_a_name(node: ast.AST) -> bool:
    """An operand of a comparison that is the transport's name: ``x.transport``, ``transport``,
    ``getattr(x, "transport")``, ``x.bus_name()``, or a string naming a transport."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr in NAME_ATTRS:
            return True
        if isinstance(sub, ast.Name) and sub.id in NAME_ATTRS:
            return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and (sub.value in TRANSPORT_NAMES or sub.value in NAME_ATTRS):
            return True
    return False


def layering_problems(source: str, filename: str = "<suite>") -> list[str]:
    """``file:line: what`` for every comparison with a transport's name in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare) and any(_asks_for_a_name(n) for n in (node.left, *node.comparators)):
            out.append(f"{filename}:{node.lineno}: compares a transport's name ({ast.unparse(node)}); ask ops.has(CAPABILITY)")
        elif isinstance(node, ast.match_case) and _asks_for_a_name(node.pattern):
            out.append(f"{filename}:{node.pattern.lineno}: matches a transport's name; ask ops.has(CAPABILITY)")
    return out


def test_device_suites_are_found():
    names = {p.relative_to(SUITES).as_posix() for p in device_suite_modules()}
    assert "test_feature_bits.py" in names and "stress/test_ring_stress.py" in names
    assert not any(n.startswith("vhost_user/") for n in names)


def test_device_suites_ask_for_capabilities_not_transport_names():
    problems = []
    for path in device_suite_modules():
        problems += layering_problems(path.read_text(), str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source", [
    'def t(driver):\n    pci = driver.ops.transport == "vfio"\n',  # the old test_feature_bits.py
    'def t(driver):\n    if driver.ops.transport in ("model", "python"):\n        pass\n',
    'def t(ops):\n    if getattr(ops, "transport", None) != "vhost-user":\n        pass\n',
    'def t(ops):\n    assert ops.bus_name().startswith("x") or "pci" == ops.kind\n',
    'def t(spec):\n    match spec.kind:\n        case "vfio":\n            pass\n',
])
def test_the_scan_catches_a_name_branch(source):
    assert layering_problems(source), source


@pytest.mark.parametrize("source", [
    'def t(driver):\n    return driver.ops.has("pci-device")\n',
    'def t(driver):\n    return f"on a {driver.ops.transport} device"\n',  # naming it in a message is no branch
    'def t(req):\n    return req.kind == "write"\n',
])
def test_the_scan_lets_capabilities_and_messages_through(source):
    assert layering_problems(source) == []


@pytest.mark.parametrize("transport", [ConfigOps, ModelTransport, VhostUserTransport])
def test_transports_declare_only_named_capabilities(transport):
    assert isinstance(transport.capabilities, frozenset) and transport.capabilities <= CAPABILITIES


def test_an_unknown_capability_is_an_error_not_a_no():
    ops = ConfigOps()
    assert ops.has("pci-device") is False
    with pytest.raises(ValueError, match="unknown transport capability 'pci'"):
        ops.has("pci")
