#!/usr/bin/env python3
"""The two commands of the quickstart, on nothing but python3 and pip.

    python3 vc.py conformance [pytest args]   run the suites against the model devices
                                              -> reports/conformance.html and reports/conformance.json
    python3 vc.py selftest [pytest args]      run the harness's own tests

Each creates (once) a virtual environment in .venv and installs requirements.txt into it; on a
Debian python3 without the venv/ensurepip package, the environment is made --without-pip and the
system pip installs into it (pip --python), so no system package is touched.
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
REQUIREMENTS = ROOT / "requirements.txt"

COMMANDS = {
    "conformance": ["suites", "-n", "2", "--conformance-html", "reports/conformance.html", "--conformance-json", "reports/conformance.json"],
    "selftest": ["tests", "-n", "2"],
}


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    py = venv_python()
    if not py.exists():
        print(f"vc: creating virtual environment {VENV}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except Exception as e:  # Debian without python3-venv: no ensurepip
            print(f"vc: venv with pip failed ({e}); creating it without pip", flush=True)
            venv.EnvBuilder(with_pip=False, clear=True).create(VENV)
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        has_pip = subprocess.run([str(py), "-c", "import pip"], capture_output=True).returncode == 0
        if has_pip:
            cmd = [str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
        else:
            cmd = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "-r", str(REQUIREMENTS)]
        print("vc: installing requirements", flush=True)
        subprocess.run(cmd, check=True)
        stamp.write_text(digest)
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    py = ensure_venv()
    args = [str(py), "-m", "pytest", *COMMANDS[argv[0]], *argv[1:]]
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
