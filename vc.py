#!/usr/bin/env python3
"""The two commands of the quickstart, on nothing but python3 and pip.

    python3 vc.py conformance [pytest args]   run the suites against the model devices
                                              -> reports/conformance.html and reports/conformance.json
    python3 vc.py selftest [pytest args]      run the harness's own tests

Each creates (once) a virtual environment in .venv ($VC_VENV to choose another) and installs this
checkout into it, editable, with the dependencies pyproject.toml declares (selftest adds the `test`
extra: ruff); again whenever pyproject.toml changes. On a Debian python3 without the venv/ensurepip
package, the environment is made --without-pip and the system pip installs into it (pip --python),
so no system package is touched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VC_VENV", ROOT / ".venv"))
PYPROJECT = ROOT / "pyproject.toml"

COMMANDS = {
    "conformance": ["suites", "-n", "2", "--conformance-html", "reports/conformance.html", "--conformance-json", "reports/conformance.json"],
    "selftest": ["tests", "-n", "2"],
}
EXTRAS = {"conformance": "", "selftest": "test"}  # the extra of pyproject.toml each command needs


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(extra: str) -> Path:
    py = venv_python()
    if VENV.is_file():  # a redirect file (tox 4 writes one where no .venv exists): ours replaces it
        print(f"vc: {VENV} is a redirect file ({VENV.read_text().strip()}); replacing it with a virtual environment", flush=True)
        VENV.unlink()
    if not py.exists():
        print(f"vc: creating virtual environment {VENV}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except Exception as e:  # Debian without python3-venv: no ensurepip
            print(f"vc: venv with pip failed ({e}); creating it without pip", flush=True)
            venv.EnvBuilder(with_pip=False, clear=True).create(VENV)
    # What was installed, from which pyproject.toml: a stamp per extra, so that conformance after
    # selftest does not install again, and an edited pyproject.toml does.
    digest = hashlib.sha256(PYPROJECT.read_bytes() + str(ROOT).encode()).hexdigest()
    stamp = VENV / f".vc-installed{'-' + extra if extra else ''}.sha256"
    installed = [VENV / ".vc-installed-test.sha256", stamp]  # the test extra includes the base install
    if not any(s.exists() and s.read_text() == digest for s in installed):
        has_pip = subprocess.run([str(py), "-c", "import pip"], capture_output=True).returncode == 0
        pip = [str(py), "-m", "pip"] if has_pip else [sys.executable, "-m", "pip", "--python", str(py)]
        target = f"{ROOT}[{extra}]" if extra else str(ROOT)
        print(f"vc: installing {target} (editable) and its dependencies", flush=True)
        subprocess.run([*pip, "install", "-q", "-e", target], check=True)
        stamp.write_text(digest)
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    py = ensure_venv(EXTRAS[argv[0]])
    args = [str(py), "-m", "pytest", *COMMANDS[argv[0]], *argv[1:]]
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
