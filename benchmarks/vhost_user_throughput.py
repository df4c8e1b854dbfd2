#!/usr/bin/env python3
"""Throughput through the harness's vhost-user front-end against real back-ends.

    python3 benchmarks/vhost_user_throughput.py [--seconds 10] [--blk] [--net] [--json out.json]
        [--qd 1 --qd 32 --qd 128] [--wait poll|call] [--layout split|packed]

blk: 4 KiB reads against qemu-storage-daemon's null-co export (1 queue), a closed loop at each
queue depth: every completion's used elem is validated by the driver-side queue (id in flight, len
within the buffer, used idx step) and every request's status byte is checked to be VIRTIO_BLK_S_OK.

net: 64-byte frames transmitted to DPDK testpmd's vhost PMD (forward mode rxonly); the rate is the
back-end's own RX-packets counter over the window. In the same run, DPDK's C front-end (testpmd with
the virtio-user PMD, txonly, 64-byte frames) is measured against the same back-end process by the
same counter, so the harness/C ratio compares like with like. Every transmitted buffer's used elem
is validated by the harness.

Machine use: testpmd's forwarding lcore spins on one CPU; the harness (and the C front-end) run on
the other. Run nothing else meanwhile: on a 2-core machine any other load halves the figures.
Recipes and quirks of both back-ends: docs/BACKENDS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np

from targets.vhost_user.frontend import VhostUserTransport
from virtio import constants as C
from virtio.buffers import SgArray
from virtio.driver import VirtioDriver, VqInfo
from virtio.messages import BLK_OUTHDR, NET_HDR_SIZE

SCHEMA = "virtio-conformance/vhost-user-throughput/1"
BLK_GOAL_IOPS = 1_000_000  # at queue depth 128 against null-co
NET_GOAL_RATIO = 0.25  # harness packets/s over the C front-end's
SECTOR = 512
IO_SIZE = 4096


def wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# -- blk ------------------------------------------------------------------------------------------
def start_qsd(workdir: str, cpu: int | None) -> tuple[subprocess.Popen, str]:
    sock = os.path.join(workdir, "qsd.sock")
    cmd = (["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []) + [
        "qemu-storage-daemon",
        "--blockdev", "driver=null-co,node-name=n0,size=1073741824",
        "--export", f"type=vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path={sock},writable=on,num-queues=1,logical-block-size=512",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "qsd.log"), "wb"))
    wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 10, "qemu-storage-daemon's socket")
    if proc.poll() is not None:
        raise RuntimeError(f"qemu-storage-daemon exited {proc.returncode}; see {workdir}/qsd.log")
    return proc, sock


def bring_up(sock: str, device: str, layout: str, refuse: int = 0):
    ops = VhostUserTransport(sock, device, f"vhost-user:{device}:{sock}", timeout=5.0, mem_size=256 << 20, vq_num_max=32768)
    d = VirtioDriver(ops, timeout=5.0)
    d.reset()
    f = d.wanted_features(refuse=refuse)
    if layout == "packed":
        if not d.device_features() >> C.VIRTIO_F_RING_PACKED & 1:
            ops.close()
            raise RuntimeError(f"{device} back-end does not offer VIRTIO_F_RING_PACKED")
        f |= 1 << C.VIRTIO_F_RING_PACKED
    else:
        f &= ~(1 << C.VIRTIO_F_RING_PACKED)
    if not d.negotiate(f):
        ops.close()
        raise RuntimeError(f"back-end refused features {f:#x}")
    return ops, d


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0.0 where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def measure_blk(sock: str, qd: int, seconds: float, wait: str, layout: str, backend_pid: int | None = None) -> dict:
    ops, d = bring_up(sock, "blk", layout)
    try:
        size = 1024
        (vq,) = d.find_vqs([VqInfo("requestq", size=size)])
        d.driver_ok()
        mem = vq.mem
        qd = min(qd, size // 3)
        # One request slot per queue-depth unit, formatted once: header (IN, its own sector),
        # 4 KiB data, status byte -- as a driver keeps a pool of request structures.
        hdr = mem.alloc(16 * qd, 16)
        data = mem.alloc(IO_SIZE * qd, 4096)
        status = mem.alloc(qd, 8)
        for k in range(qd):
            mem.write(hdr + 16 * k, BLK_OUTHDR.pack(C.VIRTIO_BLK_T_IN, 0, (k * IO_SIZE // SECTOR) % (1 << 20)))
        slots = np.arange(qd, dtype=np.uint64)
        hdr_a = hdr + 16 * slots
        data_a = data + IO_SIZE * slots
        st_a = status + slots
        st_view = mem.array(status, np.uint8, qd)
        slot_of = np.zeros(size, dtype=np.intp)  # descriptor head -> request slot

        if wait == "poll":
            vq.disable_cb()
        # The pool's chains are written once; each completed request is validated (used elem by
        # the queue, status byte here) and made available again as it is (recycle/readd_batch).
        st_view[:] = 0xFF
        heads = vq.add_batch((SgArray(hdr_a, 16),), (SgArray(data_a, IO_SIZE), SgArray(st_a, 1)), qd)
        slot_of[heads] = np.arange(qd)
        vq.kick()
        done = 0
        bad = 0
        pc = time.perf_counter
        t0 = pc()
        end = t0 + seconds
        c0 = time.process_time()
        b0 = cpu_seconds(backend_pid) if backend_pid else 0.0
        lat_batches = 0
        while True:
            irq = vq.interrupts
            heads, lens = vq.get_used_batch(recycle=True)
            if not len(heads):
                if pc() >= end:
                    break
                if wait == "call" and not vq.wait_interrupt(irq, 5.0):
                    raise RuntimeError(f"no used buffer notification on {vq.name} within 5 s ({vq.num_in_flight} in flight)")
                continue
            sl = slot_of[heads]
            bad += int(np.count_nonzero(st_view[sl] != C.VIRTIO_BLK_S_OK))
            done += len(sl)
            lat_batches += 1
            if pc() >= end:
                break
            st_view[sl] = 0xFF  # a status the device must overwrite
            vq.readd_batch(heads)
            vq.kick()
        elapsed = pc() - t0
        cpu = time.process_time() - c0
        backend_cpu = (cpu_seconds(backend_pid) - b0) if backend_pid else None
        if bad:
            raise RuntimeError(f"{bad} requests completed with a status other than VIRTIO_BLK_S_OK")
        return {
            "device": "blk",
            "backend": "qemu-storage-daemon null-co",
            "layout": vq.layout,
            "qd": qd,
            "wait": wait,
            "iops": round(done / elapsed, 1),
            "completions_per_reap": round(done / max(lat_batches, 1), 2),
            "harness_cpu_share": round(cpu / elapsed, 3),
            "backend_cpu_share": round(backend_cpu / elapsed, 3) if backend_cpu is not None else None,
            "kicks": vq.kicks,
        }
    finally:
        ops.close()


# -- net ------------------------------------------------------------------------------------------
class Testpmd:
    """An interactive testpmd (stdin is ours) with one port; stats read with 'show port stats'."""

    def __init__(self, args: list[str], log: str):
        stdbuf = shutil.which("stdbuf")
        self.proc = subprocess.Popen(
            ([stdbuf, "-oL"] if stdbuf else []) + args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.log = open(log, "w")
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = ""

    def read_until(self, pattern: str, timeout: float) -> str:
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[: m.end()], self.buf[m.end() :]
                return out
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536).decode(errors="replace")
            except BlockingIOError:
                chunk = ""
            if chunk:
                self.log.write(chunk)
                self.buf += chunk
            elif self.proc.poll() is not None:
                raise RuntimeError(f"testpmd exited {self.proc.returncode} while waiting for {pattern!r}")
            else:
                time.sleep(0.01)
        raise RuntimeError(f"testpmd: no {pattern!r} within {timeout} s")

    def cmd(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def rx_packets(self) -> int:
        self.cmd("show port stats all")
        out = self.read_until(r"RX-packets:[^#]*#{20,}", 10)
        m = re.search(r"RX-packets:\s*(\d+)", out)
        if not m:
            raise RuntimeError(f"no RX-packets in testpmd's stats: {out[-300:]!r}")
        return int(m.group(1))

    def close(self) -> None:
        try:
            self.cmd("quit")
            self.proc.wait(5)
        except Exception:
            pass
        stop(self.proc)
        self.log.close()


def start_testpmd_backend(workdir: str) -> tuple[Testpmd, str]:
    sock = os.path.join(workdir, "net.sock")
    tp = Testpmd(
        ["dpdk-testpmd", "-l", "0,1", "--main-lcore", "0", "--no-huge", "-m", "1024", "--no-pci",
         "--file-prefix", f"vcb{os.getpid()}", "--vdev", f"net_vhost0,iface={sock},queues=1",
         "--", "-i", "--forward-mode=rxonly", "--nb-cores=1"],
        os.path.join(workdir, "testpmd-backend.log"),
    )
    tp.read_until(r"testpmd> ", 30)
    wait_for(lambda: os.path.exists(sock), 10, "testpmd's vhost-user socket")
    tp.cmd("start")
    tp.read_until(r"testpmd> ", 10)
    return tp, sock


def rate_at_backend(tp: Testpmd, seconds: float, warmup: float) -> float:
    time.sleep(warmup)
    a, t0 = tp.rx_packets(), time.monotonic()
    time.sleep(seconds)
    b, t1 = tp.rx_packets(), time.monotonic()
    return (b - a) / (t1 - t0)


def measure_c_frontend(tp: Testpmd, sock: str, workdir: str, seconds: float, packed: bool, queue_size: int | None) -> dict:
    vdev = f"net_virtio_user0,path={sock},queues=1" + (",packed_vq=1" if packed else "")
    if queue_size:
        vdev += f",queue_size={queue_size}"
    front = subprocess.Popen(
        ["dpdk-testpmd", "-l", "0,1", "--main-lcore", "1", "--no-huge", "-m", "1024", "--no-pci",
         "--file-prefix", f"vcf{os.getpid()}", "--vdev", vdev, "--", "--forward-mode=txonly",
         "--txpkts=64", "--nb-cores=1"],
        stdin=subprocess.PIPE,
        stdout=open(os.path.join(workdir, "testpmd-frontend.log"), "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        rate = rate_at_backend(tp, seconds, warmup=4.0)
    finally:
        try:
            front.stdin.write(b"\n")  # "Press enter to exit"
            front.stdin.flush()
        except OSError:
            pass
        try:
            front.wait(10)
        except subprocess.TimeoutExpired:
            stop(front)
    return {"frontend": "DPDK testpmd virtio-user (C)", "layout": "packed" if packed else "split", "queue_size": queue_size or 256, "pps": round(rate, 1)}


def frame64() -> bytes:
    """A 64-byte Ethernet/IPv4/UDP frame (checksums not needed by rxonly)."""
    eth = bytes.fromhex("02000000000202000000000108 00".replace(" ", ""))
    ip = bytes.fromhex("4500002e000000004011 0000 0a000001 0a000002".replace(" ", ""))
    udp = bytes.fromhex("1234 5678 001a 0000".replace(" ", ""))
    f = eth + ip + udp
    return f + bytes(64 - len(f))


def measure_harness_net(tp: Testpmd, sock: str, seconds: float, layout: str, batch: int, queue_size: int) -> dict:
    import threading

    refuse = (1 << C.VIRTIO_NET_F_CTRL_VQ) | (1 << C.VIRTIO_NET_F_MQ) | (1 << C.VIRTIO_NET_F_MRG_RXBUF)
    ops, d = bring_up(sock, "net", layout, refuse=refuse)
    try:
        rxq, txq = d.find_vqs([VqInfo("receiveq1", size=queue_size), VqInfo("transmitq1", size=queue_size)])
        d.driver_ok()
        mem = txq.mem
        # Every transmit buffer is the same read-only frame: the device only reads it.
        pkt = mem.alloc(NET_HDR_SIZE + 64, 64)
        mem.write(pkt, bytes(NET_HDR_SIZE) + frame64())
        txq.disable_cb()
        sent = [0]
        stop_flag = threading.Event()

        def tx_loop() -> None:
            addrs = np.full(batch, pkt, dtype=np.uint64)
            sga = (SgArray(addrs, NET_HDR_SIZE + 64),)
            while not stop_flag.is_set():
                heads, _ = txq.get_used_batch()  # validates every used elem
                n = min(txq.num_free, batch)
                if n:
                    txq.add_batch(sga if n == batch else (SgArray(addrs[:n], NET_HDR_SIZE + 64),), (), n)
                    txq.kick()
                    sent[0] += n

        # The sender runs in this process while the main thread samples the back-end's counter;
        # the sampling thread sleeps, so the sender has the CPU (one GIL switch per sample).
        t = threading.Thread(target=tx_loop, daemon=True)
        t.start()
        try:
            rate = rate_at_backend(tp, seconds, warmup=2.0)
        finally:
            stop_flag.set()
            t.join(10)
        return {"frontend": "virtio-conformance (Python)", "layout": txq.layout, "batch": batch, "queue_size": queue_size, "pps": round(rate, 1), "kicks": txq.kicks, "sent": sent[0]}
    finally:
        ops.close()


def other_cpu(cpu: int) -> int | None:
    """A CPU other than the harness's for the back-end, so the two never preempt each other."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    others = [c for c in cpus if c != cpu]
    return others[0] if others else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--blk", action="store_true", help="only the qemu-storage-daemon IOPS rows")
    ap.add_argument("--net", action="store_true", help="only the testpmd packets/s rows")
    ap.add_argument("--qd", type=int, action="append", help="queue depths (default 1, 32, 128)")
    ap.add_argument("--wait", choices=("poll", "call"), default="poll", help="blk: poll the used ring or wait for the call eventfd")
    ap.add_argument("--layout", choices=("split", "packed"), default="split")
    ap.add_argument("--batch", type=int, default=1024, help="net: most buffers added per kick")
    ap.add_argument("--queue-size", type=int, default=4096, help="net: transmit ring size (vhost-user rings may be up to 32768)")
    ap.add_argument("--c-queue-size", type=int, help="net: ring size of DPDK's C front-end (default: its own, 256)")
    ap.add_argument("--cpu", type=int, default=0, help="CPU the harness runs on (testpmd's forwarding lcore takes the other)")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--keep", action="store_true", help="keep the work folder with the back-ends' logs")
    args = ap.parse_args()
    both = not (args.blk or args.net)
    rows: dict = {"schema": SCHEMA, "host": platform.node(), "python": platform.python_version(), "seconds": args.seconds}
    workdir = tempfile.mkdtemp(prefix="vc-bench-")
    backend_cpu = other_cpu(args.cpu)  # before pinning ourselves: afterwards only args.cpu is visible
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        if args.blk or both:
            if not shutil.which("qemu-storage-daemon"):
                print("skip blk: qemu-storage-daemon not installed (apt-get install qemu-utils)")
            else:
                proc, sock = start_qsd(workdir, backend_cpu)
                try:
                    rows["blk"] = []
                    for qd in args.qd or (1, 32, 128):
                        r = measure_blk(sock, qd, args.seconds, args.wait, args.layout, proc.pid)
                        rows["blk"].append(r)
                        print(f"blk  qsd null-co  4 KiB read  QD {r['qd']:>3}  {r['layout']}  wait={r['wait']}: {r['iops']:>12,.0f} IOPS  (CPU: harness {r['harness_cpu_share']:.0%}, qsd {r['backend_cpu_share'] or 0:.0%})", flush=True)
                finally:
                    stop(proc)
                big = [r for r in rows["blk"] if r["qd"] >= 128]
                if big:
                    print(f"     goal >= {BLK_GOAL_IOPS:,} IOPS at QD 128: {'met' if big[0]['iops'] >= BLK_GOAL_IOPS else 'NOT met'}")
        if args.net or both:
            if not shutil.which("dpdk-testpmd"):
                print("skip net: dpdk-testpmd not installed (apt-get install dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23)")
            else:
                tp, sock = start_testpmd_backend(workdir)
                try:
                    c = measure_c_frontend(tp, sock, workdir, args.seconds, args.layout == "packed", args.c_queue_size)
                    print(f"net  testpmd rxonly  64 B  {c['layout']}  C front-end (virtio-user PMD, ring {c['queue_size']}): {c['pps']:>12,.0f} packets/s", flush=True)
                    time.sleep(1.0)  # the back-end notices the C front-end is gone
                    h = measure_harness_net(tp, sock, args.seconds, args.layout, args.batch, args.queue_size)
                    print(f"net  testpmd rxonly  64 B  {h['layout']}  harness front-end (ring {h['queue_size']}, batch {h['batch']}): {h['pps']:>12,.0f} packets/s", flush=True)
                    ratio = h["pps"] / c["pps"] if c["pps"] else 0.0
                    print(f"     harness / C = {ratio:.3f}  (goal >= {NET_GOAL_RATIO}): {'met' if ratio >= NET_GOAL_RATIO else 'NOT met'}")
                    rows["net"] = {"c": c, "harness": h, "ratio": round(ratio, 4)}
                finally:
                    tp.close()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
