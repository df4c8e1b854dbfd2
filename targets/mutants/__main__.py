"""``python -m targets.mutants``: one "name<TAB>clause-id" line per mutant device."""

from targets.mutants import mutant_registry

for m in mutant_registry().values():
    print(f"{m.name}\t{m.clause}")
