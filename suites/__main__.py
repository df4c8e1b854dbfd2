"""``python -m suites [pytest args]``: the suites of this installed copy, from any directory.

The same run as ``pytest suites`` from a checkout: test ids read ``suites/test_...`` (the rootdir
is the directory that holds this package), and the options the repository's pyproject.toml adds
(``-ra``: skip reasons in the summary; hypothesis's own pytest plugin off, see fixtures/stress.py)
are given here too, since an installed copy has no pyproject.toml. pytest runs in place of this
process (exec), so the package it collects is not already imported and the run's command line in
the report is the pytest command that ran.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    argv = [sys.executable, "-m", "pytest", str(HERE), "--rootdir", str(HERE.parent), "-ra", "-p", "no:hypothesispytest"]
    os.execv(sys.executable, argv + sys.argv[1:])
