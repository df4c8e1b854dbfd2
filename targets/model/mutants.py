"""Registry of mutant devices: deliberately non-conformant variants of the models, each breaking
one named clause. They live in tests/mutants/ (the suites must catch them); this module makes them
reachable as ``model:<name>`` targets and lists them:

    python -m targets.model.mutants      # one "name<TAB>clause-id" line per mutant
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Mutant:
    name: str
    clause: str  # the clause it breaks
    factory: Callable  # factory(mode=...) -> device
    description: str = ""


def mutant_registry() -> dict[str, Mutant]:
    """Mutants by name; empty when the tests/ tree is not present (an installed harness)."""
    try:
        module = importlib.import_module("tests.mutants")
    except ModuleNotFoundError as e:
        if e.name in ("tests", "tests.mutants"):
            return {}
        raise
    return {m.name: m for m in module.MUTANTS}


def main() -> None:
    for m in mutant_registry().values():
        print(f"{m.name}\t{m.clause}")


if __name__ == "__main__":
    main()
