"""Target inventory: back-ends the harness spawns itself, named in a TOML file (``--target-file``).

Each ``[targets.NAME]`` entry gives the device type, the command that starts a vhost-user back-end
(QEMU docs/interop/vhost-user.rst: the back-end listens on a UNIX socket, the harness connects as
the front-end), how to tell it is ready, and what it needs. Per test worker, each entry gets its
own process, socket and work folder; a process that dies is started again; every process is
stopped by PID (its process group: SIGTERM, then SIGKILL after a bound), at the end of the run or,
failing that, at interpreter exit, and the kernel sends it SIGTERM if the harness itself is killed.

This module knows nothing of pytest: the plugin (fixtures/targets.py) decides when to start, check
and stop. Errors: :class:`InventoryError` (the file is wrong: a usage error naming the line),
:class:`BackendError` (a back-end did not start or died: a TargetError naming the command, the
check that was awaited, the exit status and the tail of its stderr).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shlex
import shutil
import signal
import stat
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from virtio import toml_lines
from virtio.errors import TargetError
from virtio.net_frames import FORWARD_MODES

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ("blk", "net", "rng", "console", "scsi", "fs", "gpu", "input", "vsock", "crypto", "sound", "gpio", "i2c")
PLACEHOLDERS = {
    "socket": "the UNIX socket path the back-end listens on (one per entry and worker)",
    "workdir": "this instance's work folder (logs, disk image, pidfile)",
    "worker": "the test worker: gw0, gw1, ... under pytest-xdist, else master",
    "pidfile": "a pidfile path in the work folder",
    "name": "the entry's name",
    "device": "the entry's device type",
    "disk": "the disk image created from the entry's disk table",
    "disk_size": "its size in bytes",
    "unique": "a short token unique to this instance (e.g. DPDK's --file-prefix)",
    "python": "the Python interpreter running the harness",
    "root": "the repository root",
}
_KEYS = {"device", "command", "description", "ready", "ready_timeout", "stop_timeout", "env", "requires",
         "disk", "stdin", "transport", "timeout", "cwd", "config_change", "net_forward", "shared_dir", "one_session"}
_READY_KEYS = {"socket", "stdout", "stderr", "command"}
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.I)


class InventoryError(ValueError):
    """The inventory file is wrong; the message names the file, the line and the entry."""


class BackendError(TargetError):
    """A spawned back-end did not become ready, or died; says what was awaited and what it said."""


# -- the file ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Readiness:
    """What must hold before the harness connects: all the given checks (default: the socket exists)."""

    socket: bool = True
    stdout: str | None = None  # a regex searched in the back-end's stdout
    stderr: str | None = None
    command: tuple[str, ...] | None = None  # exits 0 once the back-end is ready (placeholders allowed)

    def describe(self) -> str:
        parts = []
        if self.socket:
            parts.append("the socket {socket} to appear")
        if self.stdout:
            parts.append(f"a stdout line matching /{self.stdout}/")
        if self.stderr:
            parts.append(f"a stderr line matching /{self.stderr}/")
        if self.command:
            parts.append(f"the command `{shlex.join(self.command)}` to exit 0")
        return " and ".join(parts)


@dataclass(frozen=True)
class Entry:
    """One ``[targets.NAME]`` table, validated (placeholders still unexpanded)."""

    name: str
    device: str
    command: tuple[str, ...]
    source: str  # "FILE:LINE", where the table starts
    description: str = ""
    ready: Readiness = field(default_factory=Readiness)
    ready_timeout: float = 10.0
    stop_timeout: float = 5.0
    env: dict = field(default_factory=dict, hash=False)
    requires: tuple[str, ...] = ()
    disk_size: int | None = None
    stdin: tuple[str, ...] | None = None  # lines written once ready; stdin then stays an open pipe
    transport: str = "vhost-user"
    timeout: float = 5.0  # the front-end's bound on every message
    cwd: str | None = None
    # How to make the back-end change its device config out of band (trigger_config_change):
    # ("signal", "SIGUSR1") sent to its PID, or ("command", argv...) that must exit 0; None: no way.
    config_change: tuple[str, ...] | None = None
    # net: what the back-end does to the frames it forwards back (virtio/net_frames.py): "any"
    # (default: only the virtio duties are judged), "unchanged" (bit for bit), "macswap".
    net_forward: str = "any"
    # fs: the directory the back-end shares (placeholders allowed), made empty before each start
    # and given to the suites as the target's shared directory (capability fs-shared-dir).
    shared_dir: str | None = None
    # The back-end serves one front-end and then exits (virtiofsd): start it afresh for every test
    # instead of reconnecting, and do not count that exit as a death.
    one_session: bool = False

    @property
    def target_id(self) -> str:
        return f"file:{self.name}"

    def missing(self) -> str | None:
        """Why this entry cannot run on this machine (a binary it requires is not on PATH), or None."""
        absent = [b for b in self.requires if shutil.which(b) is None]
        if absent:
            return f"{self.target_id} requires {', '.join(absent)}: not found on PATH ({self.source})"
        return None


def parse_size(value, where: str) -> int:
    """64M / 1G / 4096 -> bytes (binary multiples)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE_RE.match(str(value)) if isinstance(value, str) else None
    if not m or int(m[1]) == 0:
        raise InventoryError(f"{where}: disk size {value!r}: expected a positive size such as 4096, \"64M\" or \"1G\"")
    return int(m[1]) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2].upper()]


def _check_placeholders(args, where: str, allowed: set) -> None:
    for arg in args:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
        except ValueError as e:
            raise InventoryError(f"{where}: {arg!r}: {e} (write {{{{ and }}}} for literal braces)") from None
        for f in fields:
            if f not in allowed:
                known = ", ".join("{" + p + "}" for p in sorted(allowed))
                raise InventoryError(f"{where}: unknown placeholder {{{f}}} in {arg!r}; known: {known}")


def _argv(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as e:
            raise InventoryError(f"{where}: cannot split {value!r}: {e}") from None
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise InventoryError(f"{where}: expected a command as a string or a list of strings, got {value!r}")
    if not argv:
        raise InventoryError(f"{where}: the command is empty")
    return tuple(argv)


def load_inventory(path: str | os.PathLike) -> list[Entry]:
    """Read and validate an inventory file; raises InventoryError naming the line on any mistake."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InventoryError(f"{path}: cannot read the target file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise InventoryError(f"{path}: not a TOML file: byte {e.start} is not UTF-8") from None
    doc, line, msg = toml_lines.decode(text)
    if doc is None:
        raise InventoryError(f"{path}:{line}: not valid TOML: {msg}")
    unknown_top = set(doc) - {"targets"}
    if unknown_top:
        raise InventoryError(f"{path}: unknown top-level key(s) {sorted(unknown_top)}; entries go in [targets.NAME] tables")
    tables = doc.get("targets")
    if not isinstance(tables, dict) or not tables:
        raise InventoryError(f"{path}: no [targets.NAME] tables")
    heads = toml_lines.table_lines(text, "targets")
    entries = []
    for name, t in tables.items():
        line = heads.get(name, 1)
        where = f"{path}:{line}: [targets.{name}]"

        def at(key, _line=line, _name=name):
            return f"{path}:{toml_lines.key_line(text, _line, key)}: [targets.{_name}] {key}"

        if not isinstance(t, dict):
            raise InventoryError(f"{where}: expected a table")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
            raise InventoryError(f"{where}: the name may hold letters, digits, '_', '.', '-' (it appears in test ids)")
        bad = set(t) - _KEYS
        if bad:
            raise InventoryError(f"{at(sorted(bad)[0])}: unknown key(s) {sorted(bad)}; known: {sorted(_KEYS)}")
        for key in ("device", "command"):
            if key not in t:
                raise InventoryError(f"{where}: missing required key {key!r}")
        device = t["device"]
        if device not in DEVICES:
            raise InventoryError(f"{at('device')}: unknown device type {device!r}; known: {', '.join(DEVICES)}")
        allowed = set(PLACEHOLDERS)
        disk_size = None
        if "disk" in t:
            disk = t["disk"]
            if not isinstance(disk, dict) or set(disk) - {"size"} or "size" not in disk:
                raise InventoryError(f"{at('disk')}: expected {{size = \"64M\"}}, got {disk!r}")
            disk_size = parse_size(disk["size"], at("disk"))
        else:
            allowed -= {"disk", "disk_size"}
        command = _argv(t["command"], at("command"))
        _check_placeholders(command, at("command"), allowed)
        ready = _readiness(t.get("ready", "socket"), at("ready"), allowed)
        kw = {}
        for key in ("ready_timeout", "stop_timeout", "timeout"):
            if key in t:
                v = t[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 600:
                    raise InventoryError(f"{at(key)}: expected seconds in (0, 600], got {v!r}")
                kw[key] = float(v)
        env = t.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise InventoryError(f"{at('env')}: expected a table of strings, got {env!r}")
        _check_placeholders(env.values(), at("env"), allowed)
        requires = t.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(r, str) and r for r in requires):
            raise InventoryError(f"{at('requires')}: expected a list of program names, got {requires!r}")
        stdin = t.get("stdin")
        if stdin is not None:
            if not isinstance(stdin, list) or not all(isinstance(s, str) for s in stdin):
                raise InventoryError(f"{at('stdin')}: expected a list of lines, got {stdin!r}")
            stdin = tuple(stdin)
        transport = t.get("transport", "vhost-user")
        if not isinstance(transport, str) or not (transport == "vhost-user" or re.match(r"^python:[A-Za-z_][\w.]*:[A-Za-z_]\w*$", transport)):
            raise InventoryError(f"{at('transport')}: expected \"vhost-user\" or \"python:package.module:callable\", got {transport!r}")
        cwd = t.get("cwd")
        if cwd is not None:
            if not isinstance(cwd, str):
                raise InventoryError(f"{at('cwd')}: expected a path, got {cwd!r}")
            _check_placeholders([cwd], at("cwd"), allowed)
        config_change = None
        if "config_change" in t:
            config_change = _config_change(t["config_change"], at("config_change"), allowed)
        net_forward = t.get("net_forward", "any")
        if net_forward not in FORWARD_MODES:
            raise InventoryError(f"{at('net_forward')}: expected one of {', '.join(repr(m) for m in FORWARD_MODES)}, got {net_forward!r}")
        if "net_forward" in t and device != "net":
            raise InventoryError(f"{at('net_forward')}: applies to net devices only, this entry is {device}")
        kw["net_forward"] = net_forward
        if "one_session" in t:
            if not isinstance(t["one_session"], bool):
                raise InventoryError(f"{at('one_session')}: expected true or false, got {t['one_session']!r}")
            kw["one_session"] = t["one_session"]
        if "shared_dir" in t:
            if device != "fs" or not isinstance(t["shared_dir"], str):
                raise InventoryError(f"{at('shared_dir')}: a path, for fs devices only (this entry is {device})")
            _check_placeholders([t["shared_dir"]], at("shared_dir"), allowed)
            kw["shared_dir"] = t["shared_dir"]
        description = t.get("description", "")
        if not isinstance(description, str):
            raise InventoryError(f"{at('description')}: expected a string")
        entries.append(Entry(
            name=name, device=device, command=command, source=f"{path}:{line}", description=description,
            ready=ready, env=dict(env), requires=tuple(requires), disk_size=disk_size, stdin=stdin,
            transport=transport, cwd=cwd, config_change=config_change, **kw,
        ))
    return entries


def _config_change(value, where: str, allowed: set) -> tuple[str, ...]:
    """``"signal:NAME"`` (e.g. "signal:USR1": sent to the back-end's PID, from its pidfile if it
    wrote one, else the process started) or a command (string or list, placeholders allowed)."""
    if isinstance(value, str) and value.startswith("signal:"):
        name = value[len("signal:"):].upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name not in signal.Signals.__members__ or name in ("SIGKILL", "SIGSTOP"):
            raise InventoryError(f"{where}: {value!r} names no signal a back-end can handle (e.g. \"signal:USR1\")")
        return ("signal", name)
    argv = _argv(value, where)
    _check_placeholders(argv, where, allowed)
    return ("command",) + argv


def _readiness(value, where: str, allowed: set) -> Readiness:
    if value == "socket":
        return Readiness()
    if not isinstance(value, dict) or not value or set(value) - _READY_KEYS:
        raise InventoryError(f"{where}: expected \"socket\" or a table with some of {sorted(_READY_KEYS)}, got {value!r}")
    kw = {"socket": value.get("socket", False)}
    if not isinstance(kw["socket"], bool):
        raise InventoryError(f"{where}: socket = true|false, got {kw['socket']!r}")
    for key in ("stdout", "stderr"):
        if key in value:
            try:
                re.compile(value[key])
            except (re.error, TypeError) as e:
                raise InventoryError(f"{where}: {key} = {value[key]!r} is not a regular expression: {e}") from None
            _check_placeholders([value[key]], where, allowed)
            kw[key] = value[key]
    if "command" in value:
        kw["command"] = _argv(value["command"], where)
        _check_placeholders(kw["command"], where, allowed)
    return Readiness(**kw)


# -- a running instance ----------------------------------------------------------------------------
_LIVE: dict[int, SpawnedBackend] = {}  # pid -> instance, for the atexit net


def _stop_all_at_exit() -> None:
    for backend in list(_LIVE.values()):
        backend.stop()


atexit.register(_stop_all_at_exit)


def _die_with_parent() -> None:
    """In the child, before exec: own process group (so the whole tree is stopped at once) and
    SIGTERM from the kernel if the harness dies without running its atexit handlers (SIGKILL)."""
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def default_worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "master")


class SpawnedBackend:
    """One instance of an entry, for one worker: start, readiness, liveness, stop, logs."""

    def __init__(self, entry: Entry, workdir: str | os.PathLike, worker: str | None = None):
        self.entry = entry
        self.worker = worker or default_worker()
        self.workdir = Path(workdir) / f"{entry.name}-{self.worker}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        sock = self.workdir / "vhost-user.sock"
        if len(str(sock)) > _SUN_PATH_MAX:
            # sockaddr_un holds 108 bytes: deep pytest basetemps do not fit, so the socket goes to a short folder
            self._sockdir = tempfile.mkdtemp(prefix="vc-")
            sock = Path(self._sockdir) / f"{entry.name[:40]}-{self.worker}.sock"
        else:
            self._sockdir = None
        self.socket = str(sock)
        self.pidfile = str(self.workdir / "backend.pid")
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.sessions_served = 0  # front-ends connected since the last start (fixtures/targets.py)
        self.deaths: list[str] = []  # one line per unexpected exit
        self._out_start = self._err_start = 0
        self.argv: list[str] = []

    # placeholders
    def values(self) -> dict:
        v = {
            "socket": self.socket, "workdir": str(self.workdir), "worker": self.worker, "pidfile": self.pidfile,
            "name": self.entry.name, "device": self.entry.device, "python": sys.executable, "root": str(ROOT),
            "unique": re.sub(r"[^A-Za-z0-9]", "", f"vc{os.getpid()}{self.worker}{self.entry.name}")[:48],
        }
        if self.entry.disk_size is not None:
            v["disk"] = str(self.workdir / "disk.img")
            v["disk_size"] = str(self.entry.disk_size)
        return v

    def expand(self, args) -> list[str]:
        v = self.values()
        return [a.format(**v) for a in args]

    def command_line(self) -> str:
        return shlex.join(self.expand(self.entry.command))

    # life cycle
    def start(self) -> None:
        """Start the process and wait (bounded) until it is ready; BackendError if it is not."""
        self.stop()
        e = self.entry
        missing = e.missing()
        if missing:
            raise BackendError(missing)
        for stale in (self.socket, self.pidfile):
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
        if e.shared_dir is not None:
            share = Path(self.expand([e.shared_dir])[0])
            shutil.rmtree(share, ignore_errors=True)  # a fresh, empty directory for every start
            share.mkdir(parents=True)
        if e.disk_size is not None:
            disk = self.values()["disk"]
            with open(disk, "wb") as f:  # sparse, zero-filled: a fresh disk for every start
                f.truncate(e.disk_size)
        self.argv = self.expand(e.command)
        env = dict(os.environ)
        env.update(dict(zip(e.env, self.expand(list(e.env.values())))))
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.starts += 1
        self.sessions_served = 0
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            for f in (out, err):
                f.write(f"--- start {self.starts}: {shlex.join(self.argv)}\n".encode())
                f.flush()
            self._out_start, self._err_start = out.tell(), err.tell()
            try:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.PIPE if e.stdin is not None else subprocess.DEVNULL,
                    stdout=out, stderr=err, env=env, cwd=self.expand([e.cwd])[0] if e.cwd else str(ROOT),
                    preexec_fn=_die_with_parent, close_fds=True,
                )
            except OSError as exc:
                raise BackendError(f"{self.label()}: cannot run `{shlex.join(self.argv)}`: {exc.strerror}") from None
        _LIVE[self.proc.pid] = self
        self._wait_ready()
        if e.stdin:
            try:
                self.proc.stdin.write("".join(line + "\n" for line in e.stdin).encode())
                self.proc.stdin.flush()
            except OSError as exc:
                self._fail(f"writing its stdin lines failed ({exc.strerror})")

    def _wait_ready(self) -> None:
        r, e = self.entry.ready, self.entry
        deadline = time.monotonic() + e.ready_timeout
        out_re = re.compile(r.stdout.format(**self.values())) if r.stdout else None
        err_re = re.compile(r.stderr.format(**self.values())) if r.stderr else None
        check = self.expand(r.command) if r.command else None
        checked_at = 0.0
        while True:
            if self.proc.poll() is not None:
                self._fail(f"exited before it was ready (waited for {self._awaited()})")
            ok = True
            if r.socket:
                try:
                    ok = stat.S_ISSOCK(os.stat(self.socket).st_mode)
                except FileNotFoundError:
                    ok = False
            if ok and out_re:
                ok = bool(out_re.search(self._read(self.stdout_path, self._out_start)))
            if ok and err_re:
                ok = bool(err_re.search(self._read(self.stderr_path, self._err_start)))
            if ok and check and time.monotonic() - checked_at > 0.1:
                checked_at = time.monotonic()
                left = max(0.1, deadline - checked_at)
                try:
                    ok = subprocess.run(check, stdin=subprocess.DEVNULL, capture_output=True, timeout=left).returncode == 0
                except (OSError, subprocess.TimeoutExpired):
                    ok = False
            elif ok and check:
                ok = False
            if ok:
                return
            if time.monotonic() >= deadline:
                self._fail(f"not ready after {e.ready_timeout:g}s waiting for {self._awaited()}")
            time.sleep(0.01)

    def config_change_hook(self):
        """A callable that makes this back-end change its device config now (the entry's
        ``config_change``), or None. Failures are TargetErrors naming what was tried."""
        how = self.entry.config_change
        if how is None:
            return None
        if how[0] == "signal":
            sig = signal.Signals[how[1]]

            def send_signal() -> None:
                pid = self._own_pid()
                if pid is None:
                    raise BackendError(f"{self.label()}: config change: the back-end is not running")
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    raise BackendError(f"{self.label()}: config change: no process {pid} for {sig.name}") from None

            return send_signal
        argv = self.expand(list(how[1:]))

        def run_command() -> None:
            try:
                r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.entry.timeout, cwd=str(ROOT))
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BackendError(f"{self.label()}: config change `{shlex.join(argv)}` failed: {exc}") from None
            if r.returncode != 0:
                raise BackendError(f"{self.label()}: config change `{shlex.join(argv)}` exited {r.returncode}: {r.stderr.decode(errors='replace')[-400:]}")

        return run_command

    def _own_pid(self) -> int | None:
        """The PID the back-end wrote to {pidfile} (the program itself, not a wrapper), else the
        process started, while it runs."""
        if not self.alive():
            return None
        try:
            pid = int(Path(self.pidfile).read_text().split()[0])
            if pid > 0:
                return pid
        except (OSError, ValueError, IndexError):
            pass
        return self.proc.pid

    def _awaited(self) -> str:
        return self.entry.ready.describe().replace("{socket}", self.socket)

    def _fail(self, what: str):
        status = self.exit_status()
        tail = self.stderr_tail()
        self.stop()
        raise BackendError(
            f"{self.label()} {what}; command: `{shlex.join(self.argv)}`"
            + (f"; {status}" if status else "")
            + (f"; stderr tail:\n{tail}" if tail else "; stderr empty")
            + f"\n(logs in {self.workdir})"
        )

    def label(self) -> str:
        return f"back-end {self.entry.target_id} (worker {self.worker})"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> str | None:
        """'exit status N' / 'killed by SIGNAME' once the process has ended, else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exit status {rc}"

    def died(self) -> str | None:
        """If the process ended on its own: its exit status and stderr tail (recorded once)."""
        status = self.exit_status()
        if status is None:
            return None
        tail = self.stderr_tail()
        note = f"{self.label()} died ({status}); stderr tail:\n{tail}" if tail else f"{self.label()} died ({status}); stderr empty"
        self.deaths.append(note)
        self.stop()  # reaps what is left of its process group
        return note

    @staticmethod
    def _read(path: Path, start: int) -> str:
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(1 << 20).decode(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, lines: int = 15) -> str:
        text = self._read(self.stderr_path, self._err_start).rstrip("\n")
        return "\n".join(text.splitlines()[-lines:])

    def _forget(self) -> None:
        if self.proc is not None:
            _LIVE.pop(self.proc.pid, None)
            if self.proc.stdin:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
        self.proc = None

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after stop_timeout; reap; remove the socket."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            for sig, bound in ((signal.SIGTERM, self.entry.stop_timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=bound)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # the group may outlive its leader (a shell's children): nothing of it may stay behind
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._forget()
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.stop()
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def connect(backend: SpawnedBackend, spec_id: str):
    """The front-end for a ready back-end: a config-ops object (targets/config_ops.py)."""
    e = backend.entry
    if e.transport == "vhost-user":
        try:
            from targets.vhost_user.frontend import VhostUserTransport
        except ImportError as exc:
            raise TargetError(f"{spec_id}: the vhost-user front-end is not available: {exc}") from None
        ops = VhostUserTransport(backend.socket, e.device, spec_id, timeout=e.timeout, config_change_hook=backend.config_change_hook())
    else:
        import importlib

        _, module, func = e.transport.split(":")
        try:
            factory = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise TargetError(f"{spec_id}: transport {e.transport!r}: {type(exc).__name__}: {exc}") from None
        ops = factory(backend.socket, e.device, spec_id, timeout=e.timeout)
    ops.net_forward = e.net_forward  # the entry's declaration (virtio/net_frames.py)
    ops.one_session = e.one_session
    if e.shared_dir is not None:
        from targets.fs_shared_dir import HostSharedDir

        ops.shared_dir = HostSharedDir(backend.expand([e.shared_dir])[0])
    return ops
