"""Frames the harness sends through a net device and how it recognises them when they come back.

A net back-end may forward what it receives with changes (DPDK testpmd's macswap and mac forward
modes rewrite the Ethernet addresses), and what it forwards is not a virtio duty. So every frame
carries a tag in its payload -- a 16-byte marker unique to the run and a sequence number -- and a
frame that comes back is matched by its tag, wherever the back-end moved it. What a target may
change is declared by the target (``net_forward``, one of FORWARD_MODES):

- ``unchanged``: the frame comes back bit for bit (our models, testpmd io);
- ``macswap``: destination and source addresses swapped, the rest as sent (testpmd macswap);
- ``any`` (the default): only the tag and the payload after it are judged (within the bytes the
  used len covers); the Ethernet header may be anything, and bytes may follow the payload.
"""

from __future__ import annotations

import os

ETH_HLEN = 14
ETHERTYPE = b"\x88\xb5"  # IEEE 802 local experimental: no forwarder parses its payload
MARKER_LEN = 16
SEQ_LEN = 4
TAG_LEN = MARKER_LEN + SEQ_LEN
FORWARD_MODES = ("any", "unchanged", "macswap")
SOURCE_MAC = bytes.fromhex("02000000cafe")  # a locally administered address of nobody


def check_forward_mode(mode: str) -> str:
    if mode not in FORWARD_MODES:
        raise ValueError(f"net_forward {mode!r}: expected one of {', '.join(FORWARD_MODES)}")
    return mode


class FrameTags:
    """Builds tagged frames and finds the tag in what comes back."""

    def __init__(self, marker: bytes | None = None):
        self.marker = marker or os.urandom(MARKER_LEN)

    def frame(self, dst: bytes, seq: int, length: int, filler: bytes | None = None) -> bytes:
        """A frame of ``length`` bytes (at least header and tag) to ``dst`` carrying tag ``seq``."""
        head = dst + SOURCE_MAC + ETHERTYPE + self.marker + (seq & 0xFFFF_FFFF).to_bytes(SEQ_LEN, "little")
        rest = max(0, length - len(head))
        return head + (filler[:rest] if filler is not None else os.urandom(rest))

    def seq_of(self, frame: bytes) -> int | None:
        """The sequence number of the tag in ``frame``, or None when it carries none of ours."""
        at = frame.find(self.marker)
        if at < 0 or at + TAG_LEN > len(frame):
            return None
        return int.from_bytes(frame[at + MARKER_LEN : at + TAG_LEN], "little")


def forwarded(sent: bytes, mode: str) -> bytes | None:
    """The frame a back-end of ``mode`` sends back for ``sent``; None where it may vary (``any``)."""
    if mode == "unchanged":
        return sent
    if mode == "macswap":
        return sent[6:12] + sent[0:6] + sent[12:]
    return None


def difference(sent: bytes, got: bytes, mode: str, *, whole: bool = True) -> str | None:
    """What is wrong with ``got`` as the forwarded ``sent``, or None. ``whole``: ``got`` is the
    frame as long as the used len says; else a prefix of the buffer (length unknown) that must
    hold the frame."""
    want = forwarded(sent, mode)
    if want is not None:
        if (got == want) if whole else got[: len(want)] == want:
            return None
        n = min(len(got), len(want))
        at = next((i for i in range(n) if got[i] != want[i]), n)
        return f"{len(got)} bytes, first difference with the {mode} frame of {len(want)} bytes at byte {at}"
    payload = sent[ETH_HLEN:]  # the tag and what follows: no forwarder touches them
    at = got.find(payload[:TAG_LEN])
    if at < 0:
        return "the frame's tag is gone"
    if got[at : at + len(payload)] != payload:
        return "the payload after the tag differs from the one sent (or is cut short)"
    return None  # a back-end may also add bytes after it (padding, a trailer): not a virtio duty
