"""The device suites ask the transport what it can do, never what it is (issue 9, item 4).

A suite that branches on ``ops.transport == "..."`` breaks silently for the next transport; one that
imports a transport judges that transport's code, not the device. So no module of the device suites
(suites/*.py, suites/stress/) compares a transport's name or imports from targets/ other than the
config-ops seam (targets/config_ops.py, where the capabilities are named). suites/vhost_user/ is the
vhost-user transport's own protocol suite and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
EXEMPT = ("vhost_user",)  # transport-specific suites: they test the transport's protocol itself
SEAM = "targets.config_ops"
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
    """``file:line: what`` for every transport-name comparison and transport import in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare) and any(_asks_for_a_name(n) for n in (node.left, *node.comparators)):
            out.append(f"{filename}:{node.lineno}: compares a transport's name ({ast.unparse(node)}); ask ops.capabilities")
        elif isinstance(node, ast.match_case) and _asks_for_a_name(node.pattern):
            out.append(f"{filename}:{node.pattern.lineno}: matches a transport's name; ask ops.capabilities")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "targets" and alias.name != SEAM:
                    out.append(f"{filename}:{node.lineno}: imports {alias.name}; a suite reaches the device through the config ops")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "targets":
            names = [node.module] if node.module != "targets" else [f"targets.{a.name}" for a in node.names]
            for name in names:
                if name != SEAM:
                    out.append(f"{filename}:{node.lineno}: imports from {name}; a suite reaches the device through the config ops")
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
    "from targets.model.transport import ModelTransport\n",
    "import targets.vhost_user.frontend\n",
    "from targets import registry\n",
])
def test_the_scan_catches_a_name_branch_or_a_transport_import(source):
    assert layering_problems(source), source


@pytest.mark.parametrize("source", [
    "from targets.config_ops import PCI_DEVICE\n\ndef t(driver):\n    return PCI_DEVICE in driver.ops.capabilities\n",
    'def t(driver):\n    return f"on a {driver.ops.transport} device"\n',  # naming it in a message is no branch
    'def t(req):\n    return req.kind == "write"\n',
])
def test_the_scan_lets_capabilities_and_messages_through(source):
    assert layering_problems(source) == []
