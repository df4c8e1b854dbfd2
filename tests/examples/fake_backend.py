"""A stand-in back-end for the inventory's self-tests: listens on a UNIX socket as a vhost-user
back-end would, and misbehaves on request, so that start, readiness, restart and teardown can be
tested without third-party software.

    python3 -m tests.examples.fake_backend --socket PATH [--pidfile P] [--behaviour B] [--delay S]

Behaviours: ``ok`` (serves; a client sending ``die`` makes it exit 3 after a line on stderr),
``never-ready`` (never listens), ``exit`` (exits 2 at once, with a message), ``ignore-term``
(ignores SIGTERM, so only SIGKILL stops it), ``child`` (also starts a grandchild that sleeps; its
PID goes to stdout). Prints ``listening on PATH`` once it listens.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pidfile")
    ap.add_argument("--behaviour", default="ok", choices=("ok", "never-ready", "exit", "ignore-term", "child"))
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before listening")
    ap.add_argument("extra", nargs="*", help="ignored (placeholder self-tests pass their values here)")
    a = ap.parse_args()
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    print(f"fake back-end pid {os.getpid()} worker {os.environ.get('FAKE_WORKER', '?')}", flush=True)
    if a.behaviour == "exit":
        print("fatal: cannot open the export (on purpose)", file=sys.stderr, flush=True)
        return 2
    if a.behaviour == "never-ready":
        while True:
            time.sleep(1)
    if a.behaviour == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.behaviour == "child":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"grandchild pid {child.pid}", flush=True)
    time.sleep(a.delay)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    srv.listen(4)
    print(f"listening on {a.socket}", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(30)
            data = b""
            try:
                while chunk := conn.recv(64):
                    data += chunk
                    if b"die" in data:
                        print("fatal: a client asked me to die", file=sys.stderr, flush=True)
                        os._exit(3)
                    if b"pid" in data:
                        conn.sendall(f"{os.getpid()}\n".encode())
                        data = b""
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
