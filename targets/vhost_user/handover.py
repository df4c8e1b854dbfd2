"""What a vhost-user front-end hands its back-end: guest memory as memory-table regions at front-end
user addresses, and each ring (QEMU docs/interop/vhost-user.rst, "Memory access", "Ring states",
"Front-end message types"). Written once for the front-end transport (frontend.py), the raw
session of the protocol suite (session.py) and the self-tests' scripted front-ends.

Two address spaces (docs/BACKENDS.md #1): SET_VRING_ADDR carries front-end *user* addresses, which
the back-end translates through each region's user address; descriptors carry guest-physical ones.
Our user address of guest memory's first byte is ``USER_BASE``, far from virtio.memory's
DEFAULT_BASE, so a back-end that translates a ring address as guest-physical, or a descriptor the
other way, misses. User addresses are consistent, not real pointers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from virtio.areas import RingAddrs

from .protocol import (
    ADD_MEM_REG,
    SET_MEM_TABLE,
    SET_VRING_ADDR,
    SET_VRING_BASE,
    SET_VRING_CALL,
    SET_VRING_ENABLE,
    SET_VRING_ERR,
    SET_VRING_KICK,
    SET_VRING_NUM,
    U64,
    VRING_STATE,
    MemRegion,
    pack_mem_table,
    pack_single_region,
    pack_vring_addr,
    vring_base_packed,
)

USER_BASE = 0x7F00_0000_0000

# The vring state ``num`` a fresh ring starts from, by the queue's layout: split, next avail index
# 0; packed, indexes 0 and both wrap counters 1 (2.8.1), which bits 15 and 31 carry (docs/BACKENDS.md #5).
INITIAL_VRING_BASE = {"split": 0, "packed": vring_base_packed(0, 1, 0, 1)}

# send(request, payload, fds): one message, its answer checked by the caller's own rules.
Send = Callable[[int, bytes, Sequence[int]], object]


def user_addr(guest_addr: int, mem_base: int) -> int:
    """The front-end user address of ``guest_addr`` in guest memory whose first region starts at
    guest address ``mem_base``."""
    return USER_BASE + (guest_addr - mem_base)


def mem_region(mem, mem_base: int | None = None) -> MemRegion:
    """Guest memory ``mem`` (virtio.memory.GuestMemory) as one memory-table region, at its user
    address relative to ``mem_base`` (the first region's guest address; default ``mem.base``)."""
    base = mem.base if mem_base is None else mem_base
    return MemRegion(mem.base, mem.size, user_addr(mem.base, base), 0)


def set_mem_table(send: Send, mems: Sequence) -> None:
    """SET_MEM_TABLE of every region in ``mems`` (GuestMemory, the first one's base is user
    address USER_BASE), each region's memfd riding with it."""
    send(SET_MEM_TABLE, pack_mem_table([mem_region(m, mems[0].base) for m in mems]), [m.fd for m in mems])


def add_mem_reg(send: Send, mem, mem_base: int) -> None:
    """ADD_MEM_REG (PROTOCOL_F_CONFIGURE_MEM_SLOTS): one region, its memfd alone with it."""
    send(ADD_MEM_REG, pack_single_region(mem_region(mem, mem_base)), [mem.fd])


def program_ring(send: Send, vq, mem_base: int, *, call_fd: int, kick_fd: int | None = None,
                 err_fd: int | None = None, base: int | None = None) -> None:
    """Hand the driver-side queue ``vq`` (index, num, layout and spec-named ``addrs``) to the
    back-end, in QEMU's vhost_virtqueue_start order: SET_VRING_NUM, SET_VRING_BASE (``base``, by
    default a fresh ring's), SET_VRING_ADDR at user addresses, SET_VRING_CALL, SET_VRING_ERR (with
    ``err_fd``), then SET_VRING_KICK (with ``kick_fd``) last: a back-end starts the ring on its kick
    fd, so the call fd must be in place by then (docs/BACKENDS.md #3). Enabling is the caller's step."""
    index, a = vq.index, vq.addrs
    send(SET_VRING_NUM, VRING_STATE.pack(index, vq.num), ())
    send(SET_VRING_BASE, VRING_STATE.pack(index, INITIAL_VRING_BASE[vq.layout] if base is None else base), ())
    user = RingAddrs(a.num, user_addr(a.desc, mem_base), user_addr(a.driver, mem_base), user_addr(a.device, mem_base))
    send(SET_VRING_ADDR, pack_vring_addr(index, user), ())
    send(SET_VRING_CALL, U64.pack(index), (call_fd,))
    if err_fd is not None:
        send(SET_VRING_ERR, U64.pack(index), (err_fd,))
    if kick_fd is not None:
        set_vring_kick(send, index, kick_fd)


def set_vring_kick(send: Send, index: int, kick_fd: int) -> None:
    send(SET_VRING_KICK, U64.pack(index), (kick_fd,))


def enable_ring(send: Send, index: int, on: int = 1) -> None:
    """SET_VRING_ENABLE: with VHOST_USER_F_PROTOCOL_FEATURES a ring starts disabled ("Ring states")."""
    send(SET_VRING_ENABLE, VRING_STATE.pack(index, on), ())
