"""VIRTIO 1.4, 5.1.9.5.11: device statistics over the control virtqueue (VIRTIO_NET_F_DEVICE_STATS).

VIRTIO_NET_CTRL_STATS_QUERY answers the statistic types the device supports; VIRTIO_NET_CTRL_STATS_GET
takes entries of (vq_index, types_bitmap) and answers, after the ack, one reply per queue and type:
struct virtio_net_stats_reply_hdr (type, vq_index, size including the header) and its le64 counters.
Judged: QUERY lists exactly what GET answers; a request with any bad entry (a queue the device
lacks, an unknown type, a type for another kind of queue, a type whose feature was not negotiated)
is refused whole; each reply's size and header are right; the device says it wrote no more than
its replies. The counters' values are not judged: the chapter defines what they count, not when
a device updates them.
"""

from __future__ import annotations

import pytest

from virtio import constants as C
from virtio import net_ctrl as NC
from virtio.checks import require

from .ctrl import start_ctrl

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("net")]

DS = "dev.net.device-operation.control-virtqueue.device-statistics."
QUERY_LISTS_SUPPORTED = DS + "1"
MALFORMED_REFUSED = DS + "2"
ONE_BAD_FAILS_ALL = DS + "3"
REPLY_SIZE = DS + "4"
REPLY_HEADER = DS + "5"
VALID_BYTES_ONLY = DS + "6"
OK = C.VIRTIO_NET_OK
NO_SUCH_QUEUE = 0x7FFF
UNKNOWN_TYPE = 1 << 5  # VIRTIO_NET_STATS_TYPE_* defines bits 0-3, 16-19 and 32
# Features that make statistic types available (5.1.9.5.11), negotiated where the device offers them.
TYPE_FEATURES = (C.VIRTIO_NET_F_CSUM, C.VIRTIO_NET_F_GUEST_CSUM, C.VIRTIO_NET_F_HOST_TSO4, C.VIRTIO_NET_F_HOST_TSO6,
                 C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6)


class Stats:
    def __init__(self, session, refuse=()):
        offered = session.driver.device_features()  # start_ctrl skips on the capability, then on DEVICE_STATS
        want = [f for f in TYPE_FEATURES if offered >> f & 1 and f not in refuse]
        self.n = start_ctrl(session, want=(C.VIRTIO_NET_F_DEVICE_STATS, *want), refuse=(C.VIRTIO_NET_F_MQ, *refuse))
        self.neg = session.driver.negotiated or 0
        self.index = {vq.name: vq.index for vq in self.n.work.vqs}
        self.kind_queue = {"rx": self.index["receiveq1"], "tx": self.index["transmitq1"], "ctrl": self.index["controlq"]}

    def query(self, clause: str) -> tuple[int, int]:
        r = self.n.ctrl.command_with_result(NC.VIRTIO_NET_CTRL_STATS, NC.VIRTIO_NET_CTRL_STATS_QUERY, b"",
                                            NC.NET_STATS_CAPABILITIES.size, clause, "VIRTIO_NET_CTRL_STATS_QUERY")
        return r.ack, (NC.NET_STATS_CAPABILITIES.unpack(r.result)[0] if r.ack == OK else 0)

    def supported(self, clause: str) -> int:
        ack, types = self.query(clause)
        if ack != OK:
            pytest.skip("VIRTIO_NET_CTRL_STATS_QUERY answered VIRTIO_NET_ERR (test_query_lists_what_get_answers judges it)")
        return types

    def available(self, t: NC.StatsType) -> bool:
        """A type whose feature (if it needs one) was negotiated."""
        return not t.features or any(self.neg >> f & 1 for f in t.features)

    def get(self, entries: list[tuple[int, int]], clause: str, spare: int = 64):
        """STATS_GET with room for the replies the spec's structures take, plus ``spare`` bytes."""
        room = sum(NC.STATS_TYPES[b].reply_size if b in NC.STATS_TYPES else NC.NET_STATS_REPLY_HDR.size
                   for _, types in entries for b in range(64) if types >> b & 1) + spare
        what = "VIRTIO_NET_CTRL_STATS_GET " + ", ".join(f"vq {i}: {NC.stats_types_named(t)}" for i, t in entries)
        return self.n.ctrl.command_with_result(NC.VIRTIO_NET_CTRL_STATS, NC.VIRTIO_NET_CTRL_STATS_GET,
                                               NC.stats_request(entries), room, clause, what, exact=False)

    def supported_entries(self, clause: str) -> list[tuple[int, int]]:
        """One entry per kind of queue, with every supported and available type for it."""
        supported = self.supported(clause)
        entries = []
        for kind, index in self.kind_queue.items():
            types = sum(1 << t.bit for t in NC.STATS_TYPES.values()
                        if t.queue == kind and supported >> t.bit & 1 and self.available(t))
            if types:
                entries.append((index, types))
        if not entries:
            pytest.skip(f"QUERY lists no type this driver can ask for ({NC.stats_types_named(supported)})")
        return entries


def asked(entries: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (type, vq_index) replies a request asks for."""
    return sorted((b, index) for index, types in entries for b in range(64) if types >> b & 1)


def replies(result: bytes, count: int) -> list[tuple[int, int, int]] | None:
    """(type, vq_index, size) of the first ``count`` replies, walked by their size fields; None
    where a size does not let them be walked (less than a header, or past the buffer)."""
    out, pos = [], 0
    for _ in range(count):
        if len(result) - pos < NC.NET_STATS_REPLY_HDR.size:
            return None
        rtype, _, index, _, size = NC.NET_STATS_REPLY_HDR.unpack_from(result, pos)
        if size < NC.NET_STATS_REPLY_HDR.size or pos + size > len(result):
            return None
        out.append((rtype, index, size))
        pos += size
    return out


@pytest.mark.clause(QUERY_LISTS_SUPPORTED)
def test_query_lists_what_get_answers(session):
    """QUERY is answered VIRTIO_NET_OK with struct virtio_net_stats_capabilities; then GET of each
    defined type (its feature negotiated) on a queue of its kind: a listed type is answered, an
    unlisted one refused -- supported_stats_types holds exactly the types the device supports."""
    s = Stats(session)
    ack, supported = s.query(QUERY_LISTS_SUPPORTED)
    require(ack == OK, QUERY_LISTS_SUPPORTED, "VIRTIO_NET_CTRL_STATS_QUERY with VIRTIO_NET_F_DEVICE_STATS negotiated",
            expected="VIRTIO_NET_OK and struct virtio_net_stats_capabilities", observed=NC.ack_name(ack), queue="controlq")
    for t in NC.STATS_TYPES.values():
        if not s.available(t):
            continue
        listed = bool(supported >> t.bit & 1)
        r = s.get([(s.kind_queue[t.queue], 1 << t.bit)], QUERY_LISTS_SUPPORTED)
        require((r.ack == OK) == listed, QUERY_LISTS_SUPPORTED, f"STATS_GET of {t.name} on the {t.queue} queue",
                expected=f"{'VIRTIO_NET_OK' if listed else 'VIRTIO_NET_ERR'}: supported_stats_types "
                         f"{NC.stats_types_named(supported)} {'lists' if listed else 'does not list'} it",
                observed=NC.ack_name(r.ack), queue="controlq")


@pytest.mark.clause(MALFORMED_REFUSED)
def test_malformed_requests_refused(session):
    """Requests of one bad entry each are answered VIRTIO_NET_ERR: vq_index beyond the queues, an
    unknown type bit, a receive type for transmitq1, RX_CSUM with VIRTIO_NET_F_GUEST_CSUM not
    negotiated."""
    s = Stats(session, refuse=(C.VIRTIO_NET_F_GUEST_CSUM, C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6))
    rx, tx = s.kind_queue["rx"], s.kind_queue["tx"]
    basic = 1 << 0  # RX_BASIC
    for entry, why in (((NO_SUCH_QUEUE, basic), f"vq_index {NO_SUCH_QUEUE:#x}, beyond the device's queues"),
                       ((rx, basic | UNKNOWN_TYPE), "an unknown type bit (5) in types_bitmap"),
                       ((tx, basic), "RX_BASIC for transmitq1, not valid for that queue"),
                       ((rx, 1 << 1), "RX_CSUM with VIRTIO_NET_F_GUEST_CSUM not negotiated")):
        r = s.get([entry], MALFORMED_REFUSED)
        require(r.ack != OK, MALFORMED_REFUSED, f"STATS_GET with {why}", expected="VIRTIO_NET_ERR",
                observed=NC.ack_name(r.ack), queue="controlq")


@pytest.mark.clause(ONE_BAD_FAILS_ALL)
def test_one_bad_entry_fails_the_whole_request(session):
    """A request of good entries (types QUERY lists) and one naming a queue the device lacks,
    before and after them, is answered VIRTIO_NET_ERR."""
    s = Stats(session)
    good = s.supported_entries(ONE_BAD_FAILS_ALL)
    bad = (NO_SUCH_QUEUE, good[0][1])
    for entries in ([*good, bad], [bad, *good]):
        r = s.get(entries, ONE_BAD_FAILS_ALL)
        require(r.ack != OK, ONE_BAD_FAILS_ALL, f"STATS_GET of {len(good)} good entries and one naming vq_index {NO_SUCH_QUEUE:#x}",
                expected="VIRTIO_NET_ERR for the whole command", observed=NC.ack_name(r.ack), queue="controlq")


@pytest.mark.clause(REPLY_SIZE)
def test_reply_sizes(session):
    """Every reply's size is the bytes it occupies: at least header and the counters its type
    defines, a multiple of 8 (le64 counters), and the replies end where the valid bytes end."""
    s = Stats(session)
    entries = s.supported_entries(REPLY_SIZE)
    r = s.get(entries, REPLY_SIZE)
    if r.ack != OK:
        pytest.skip("STATS_GET of supported types refused (test_query_lists_what_get_answers judges it)")
    n = len(asked(entries))
    got = replies(r.result, n)
    require(got is not None, REPLY_SIZE, f"the {n} replies of STATS_GET, walked by their size fields",
            expected=f"sizes of at least {NC.NET_STATS_REPLY_HDR.size}, within the result buffer",
            observed=r.result[:128].hex(), queue="controlq")
    total = sum(size for *_, size in got)
    if r.used_len is not None:
        require(total <= r.used_len - NC.ACK_SIZE, REPLY_SIZE, "the replies' sizes against the bytes the device wrote",
                expected=f"sizes summing to at most the {r.used_len - NC.ACK_SIZE} result bytes of used len {r.used_len}",
                observed=f"{total}", queue="controlq")
    for rtype, index, size in got:
        t = NC.STATS_TYPES.get(rtype)
        least = t.reply_size if t else NC.NET_STATS_REPLY_HDR.size
        require(size >= least and size % 8 == 0, REPLY_SIZE, f"size of the {t.name if t else rtype} reply of queue {index}",
                expected=f"the bytes it occupies: >= {least} (header and counters), a multiple of 8", observed=size,
                queue="controlq")


@pytest.mark.clause(REPLY_HEADER)
def test_reply_headers_name_type_and_queue(session):
    """The replies' (type, vq_index) are exactly the (type, queue) pairs asked for."""
    s = Stats(session)
    entries = s.supported_entries(REPLY_HEADER)
    r = s.get(entries, REPLY_HEADER)
    if r.ack != OK:
        pytest.skip("STATS_GET of supported types refused (test_query_lists_what_get_answers judges it)")
    want = asked(entries)
    got = replies(r.result, len(want))
    if got is None:
        pytest.skip("the replies cannot be walked by their size fields (test_reply_sizes reports it)")
    seen = sorted((rtype, index) for rtype, index, _ in got)
    require(seen == want, REPLY_HEADER, "type and vq_index of the STATS_GET replies",
            expected=", ".join(f"{NC.STATS_TYPES[b].name}@{i}" for b, i in want),
            observed=", ".join(f"{NC.STATS_TYPES[b].name if b in NC.STATS_TYPES else b}@{i}" for b, i in seen),
            queue="controlq")


@pytest.mark.clause(VALID_BYTES_ONLY)
def test_result_filled_only_to_the_valid_bytes(session):
    """A result buffer 256 bytes larger than the replies: the used len says the device wrote the
    ack and the replies, nothing past them."""
    s = Stats(session)
    entries = s.supported_entries(VALID_BYTES_ONLY)
    r = s.get(entries, VALID_BYTES_ONLY, spare=256)
    if r.ack != OK:
        pytest.skip("STATS_GET of supported types refused (test_query_lists_what_get_answers judges it)")
    if r.used_len is None:
        pytest.skip("the device reports no used len for this buffer (in-order batch): nothing to judge")
    got = replies(r.result, len(asked(entries)))
    sizes = sum(size for *_, size in got) if got else None
    if sizes is None:
        pytest.skip("the replies cannot be walked by their size fields (test_reply_sizes reports it)")
    require(r.used_len <= NC.ACK_SIZE + sizes, VALID_BYTES_ONLY, "used len of STATS_GET with a result buffer larger than its replies",
            expected=f"<= {NC.ACK_SIZE + sizes} (ack and {sizes} bytes of replies)",
            observed=f"{r.used_len} of the {NC.ACK_SIZE + len(r.result)} bytes offered", queue="controlq")
