"""Correct but unusual reference devices: each does something the VIRTIO spec allows that our
models do not do, and the suites must find every one CONFORMANT (tests/test_unusual_devices.py).

Each module of this package lists its devices in ``DEVICES``; a device is reached as the target
``python:tests.unusual.<module>:<factory>`` (a --target spec).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Unusual:
    name: str  # kebab-case, device type first (e.g. "rng-queue-size-2")
    target: str  # "python:tests.unusual.<module>:<factory>", a --target spec
    allows: str  # what it does that the spec allows, and where (section)
    options: tuple[str, ...] = ()  # extra pytest arguments its run needs


def registry() -> dict[str, Unusual]:
    """Every device of every module of this package, by name."""
    found: dict[str, Unusual] = {}
    for mod in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for dev in getattr(module, "DEVICES", ()):
            if dev.name in found:
                raise ValueError(f"two unusual devices are named {dev.name}")
            found[dev.name] = dev
    return dict(sorted(found.items()))
