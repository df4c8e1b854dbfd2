"""Serve a model device (or a device mutant) over vhost-user, in its own process.

    python -m targets.vhost_user.serve --device NAME --socket PATH [--mode notify|threaded]
        [--protocol-mutant NAME] [--pidfile P] [--once] [--timeout S]

Listens on the UNIX socket PATH (a stale socket file is removed first), prints "listening on PATH"
on stdout when ready, and serves one front-end at a time with a fresh device each, then the next
(or exits after the first with --once). SIGTERM ends it with status 0, removing the socket and the
pidfile (QEMU docs/interop/vhost-user.rst, "Backend program conventions"). SIGUSR1 makes the
connected front-end's device change its configuration (blk: a resize; console: a terminal resize;
net: a link flap), which the front-end hears as BACKEND_CONFIG_CHANGE_MSG when it negotiated
VHOST_USER_PROTOCOL_F_CONFIG and set up the back-end channel: the harness's inventory field
``config_change = "signal:USR1"`` uses it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys

from .channel import Channel


class Terminate(BaseException):
    """SIGTERM arrived."""


def _on_sigterm(signum, frame):
    raise Terminate()


_session = None  # the Backend serving the connected front-end, if any


def _on_sigusr1(signum, frame):
    backend = _session
    if backend is not None:
        backend.request_config_change()  # an eventfd write: the session loop does the rest
    else:
        print("vhost-user backend: SIGUSR1 with no front-end connected: no config change", file=sys.stderr, flush=True)


def backend_class(mutant: str | None):
    from .backend import Backend

    if mutant is None:
        return Backend
    from targets.mutants.vhost_user import PROTOCOL_MUTANTS

    if mutant not in PROTOCOL_MUTANTS:
        raise SystemExit(f"--protocol-mutant {mutant}: unknown; known: {', '.join(sorted(PROTOCOL_MUTANTS)) or '(none)'}")
    return PROTOCOL_MUTANTS[mutant]


def _remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"{path} exists and is not a socket; not removing it")
    os.unlink(path)


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    from targets.registry import model_names

    p = argparse.ArgumentParser(prog="python -m targets.vhost_user.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", required=True, help="a model or device mutant name (python -m targets.mutants)")
    p.add_argument("--socket", required=True, help="UNIX socket path to listen on")
    p.add_argument("--mode", choices=("notify", "threaded"), default="notify")
    p.add_argument("--protocol-mutant", default=None, help="a name in targets.mutants.vhost_user.PROTOCOL_MUTANTS")
    p.add_argument("--pidfile", default=None)
    p.add_argument("--once", action="store_true", help="exit after the first front-end leaves")
    p.add_argument("--timeout", type=float, default=5.0, help="bound on reading one whole message (s)")
    args = p.parse_args(argv)

    factories = model_names()
    if args.device not in factories:
        print(f"unknown device {args.device!r}; devices: {', '.join(sorted(factories))}", file=sys.stderr)
        return 2
    factory = factories[args.device]
    cls = backend_class(args.protocol_mutant)

    global _session
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGUSR1, _on_sigusr1)
    _remove_stale(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    pidfile = None
    try:
        listener.bind(args.socket)
        listener.listen(1)  # one front-end at a time: the next one waits in the backlog
        if args.pidfile:
            with open(args.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
            pidfile = args.pidfile
        print(f"listening on {args.socket}", flush=True)
        while True:
            conn, _ = listener.accept()
            backend = None
            try:
                backend = cls(factory(mode=args.mode), Channel(conn, "front-end", timeout=args.timeout), timeout=args.timeout)
                backend.log(f"front-end connected ({args.device}, {args.mode} mode)")
                _session = backend
                why = backend.run()
                backend.log(f"session ended: {why} ({backend.requests} requests, {backend.failures} refused)")
            except Terminate:
                raise
            except Exception as e:  # never let one session take the server down
                print(f"vhost-user backend: session failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            finally:
                _session = None
                if backend is not None:
                    backend.close()
                else:
                    conn.close()
            if args.once:
                break
    except Terminate:
        pass
    finally:
        listener.close()
        _unlink(args.socket)
        _unlink(pidfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
