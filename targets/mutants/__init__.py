"""Mutant devices: clean models (targets/model) with one method overridden to break one clause.
They are part of the product: ``--target model:NAME`` runs the suites against one (a user can see
what a failure of each clause looks like), ``python -m targets.mutants`` lists them, and the
vhost-user server serves them (``--device NAME``, ``--protocol-mutant NAME``). The self-tests
(tests/test_mutants.py) assert that the suites catch each one on its clause and no other.

A mutant is a subclass of a model with class attributes ``name`` (kebab-case, device type first)
and ``clause`` (an id from virtio/clauses.toml), a docstring saying what it breaks and why that is
non-conformant, and the smallest override that does it, marked ``# BUG``. To add one: write the
class in the module of its topic, list it in ``MUTANT_CLASSES`` below, and run
``pytest tests/test_mutants.py -k <name>``: the suites must fail its clause and no other MUST clause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from virtio import constants as C

from . import (
    blk,
    blk_zoned,
    config,
    console,
    fs,
    net_ctrl,
    net_data,
    packed,
    queue_reset,
    ring_options,
    rings,
    rng,
    status_features,
    suspend,
)


@dataclass(frozen=True)
class Mutant:
    name: str
    clause: str  # the clause it breaks
    factory: Callable  # factory(mode=...) -> device
    description: str = ""


MUTANT_CLASSES = [
    # status, features, reset (2.1, 2.2, 2.4, 6)
    status_features.RngAcceptsUnofferedFeatures,
    status_features.RngResetIgnoredBeforeDriver,
    status_features.RngQueueLiveBeforeDriverOk,
    status_features.RngNoVersion1,
    status_features.RngOffersUndefinedBit,
    status_features.RngOffersSrIov,
    status_features.NetCtrlRxWithoutCtrlVq,
    status_features.RngRefusesRenegotiation,
    status_features.RngFeaturesChangeAfterNegotiation,
    status_features.RngDriverBitNotKept,
    status_features.RngEventIdxSurvivesReset,
    status_features.ConsoleConfigNotifyAfterReset,
    status_features.RngResetIgnoredWhileFailed,
    status_features.RngKeepsNeedsResetAfterReset,
    status_features.RngKeepsRingPositionAfterReset,
    # configuration space (2.3, 2.5), shared memory (2.10)
    config.BlkGenerationStuck,
    config.BlkCapacityBigEndian,
    config.ConsoleConfigZeroBeforeFeaturesOk,
    config.ConsoleNoConfigChangeNotification,
    config.BlkOverlappingShmRegions,
    # split virtqueues (2.7)
    rings.RngUsedLenOverstated,
    rings.RngUsedIdOneBased,
    rings.RngUsedIdxCountsDescriptors,
    rings.ConsoleWritesReadableBuffer,
    rings.RngWritesDescriptorTable,
    rings.RngWritesPastBuffer,
    rings.RngWritesIndirectTable,
    rings.BlkOneDescriptorPerPart,
    rings.RngHoldsLargeBuffers,
    rings.RngIgnoresSmallQueueSize,
    rings.RngRejectsWriteFlagOnIndirect,
    rings.RngRejectsDirectThenIndirect,
    rings.RngIgnoresNoInterrupt,
    rings.RngNotifiesEveryOtherBuffer,
    rings.RngEventIdxNotifiesAlways,
    rings.RngUsedEventWithoutEventIdx,
    rings.RngNoInterruptSuppressesWithEventIdx,
    rings.RngUsedEventOffByOne,
    rings.RngUsedEventPlainCompare,
    rings.RngUsedFlagsGarbage,
    rings.RngNoNotifyWithEventIdx,
    rings.RngNeedsResetOnSpuriousKick,
    # virtqueue reset (2.6.1)
    queue_reset.RngQueueResetIgnored,
    queue_reset.RngQueueResetKeepsIndexes,
    queue_reset.RngQueueResizeIgnored,
    # ring options (2.7.9, 2.9)
    ring_options.RngOutOfOrder,
    ring_options.RngInOrderBatchCountsOne,
    ring_options.RngNotificationDataOffByOne,
    # packed virtqueues (2.8)
    packed.RngPackedUsedWrapStuck,
    packed.RngPackedIdFromFirstDescriptor,
    packed.RngPackedPhantomUsed,
    packed.RngPackedUsedLenOverstated,
    packed.ConsolePackedWritesReadableBuffer,
    packed.RngPackedWritesPastBuffer,
    packed.RngPackedWritesIndirectTable,
    packed.RngPackedTakesFilledSlots,
    packed.RngPackedRewritesUsedDescriptor,
    packed.RngPackedPollsAhead,
    packed.BlkPackedPayloadReversed,
    packed.BlkPackedIndirectFirstEntryOnly,
    packed.RngPackedEnableNotifiesEveryOther,
    packed.RngPackedIgnoresEventDisable,
    packed.RngPackedDescEventIgnored,
    packed.RngPackedDescEventPlainCompare,
    packed.RngPackedDescEventAsEnable,
    packed.RngPackedDescFlagWithoutEventIdx,
    packed.BlkPackedUsedInAvailOrder,
    # console (5.3): multiport control protocol, port queues, emergency write
    console.ConsoleReaddsReadyPort,
    console.ConsoleAddsPortAtMaxNrPorts,
    console.ConsoleMarkupPortName,
    console.ConsoleRemovesAbsentPort,
    console.ConsolePortTransmitqHeld,
    console.ConsoleEmergWrNeedsReset,
    console.ConsoleEmergWrNeedsFeature,
    console.ConsoleEmergWrSilent,
    console.ConsoleEmergWrHighByte,
    # rng (5.4): entropy per buffer
    rng.RngRepeatsBlock,
    rng.RngZeroBytes,
    # fs (5.11)
    fs.FsNoRequestQueues,
    fs.FsTinyNotifyBuf,
    fs.FsTagNotPadded,
    fs.FsMarkupTag,
    fs.FsHiprioPaused,
    fs.FsReadGivesZeros,
    fs.FsUnknownOpcodeOk,
    fs.FsLookupEio,
    # net: control virtqueue and multiqueue (5.1.9.5)
    net_ctrl.NetAllmultiRefused,
    net_ctrl.NetPromiscIgnored,
    net_ctrl.NetAllmultiIgnored,
    net_ctrl.NetAlluniRefused,
    net_ctrl.NetNomultiDropsBroadcast,
    net_ctrl.NetNobcastIgnored,
    net_ctrl.NetPromiscLosesToSuppression,
    net_ctrl.NetAlluniIgnored,
    net_ctrl.NetNomultiOnlyAgainstAllmulti,
    net_ctrl.NetNomultiLosesToAllmulti,
    net_ctrl.NetNouniSparesOwnMac,
    net_ctrl.NetNouniLosesToAlluni,
    net_ctrl.NetNobcastLosesToAllmulti,
    net_ctrl.NetMacTableKeptOverReset,
    net_ctrl.NetMacTableLate,
    net_ctrl.NetAddrSetConfigStale,
    net_ctrl.NetNoUnicastFilter,
    net_ctrl.NetVlanDropsUntaggedFeature,
    net_ctrl.NetVlanTableIgnored,
    net_ctrl.NetVlanNoFilter,
    net_ctrl.NetAnnounceNotCleared,
    net_ctrl.NetMqFromStart,
    net_ctrl.NetMqNeverShrinks,
    net_ctrl.NetCoalReservedRefused,
    net_ctrl.NetCoalSetAllIgnored,
    net_ctrl.NetCoalVqSetIgnored,
    net_ctrl.NetCoalCtrlQueueAccepted,
    net_ctrl.NetCoalTxResetKeepsVqSet,
    net_ctrl.NetCoalRxResetZeroes,
    net_ctrl.NetCoalNotifiesWhileSuppressed,
    net_ctrl.NetCoalKeptOverReset,
    net_ctrl.NetStatsQueryOmitsCsum,
    net_ctrl.NetStatsUnknownTypesIgnored,
    net_ctrl.NetStatsBadEntrySkipped,
    net_ctrl.NetStatsSizeWithoutHeader,
    net_ctrl.NetStatsVqIndexZero,
    net_ctrl.NetStatsFillsWholeBuffer,
    net_ctrl.NetResetQueueFramesDropped,
    net_ctrl.NetFramesKeptWhileAllReset,
    net_ctrl.NetRssHashesAddressesOnly,
    net_ctrl.NetRssReselectsWhenReset,
    # net (data path and config, 5.1): targets/mutants/net_data.py
    *net_data.NET_DATA_MUTANTS,
    # virtio-blk device duties (5.2.5.2, 5.2.6.2)
    blk.BlkConfigWceWithoutFlush,
    blk.BlkWritebackLeftOn,
    blk.BlkReadOnlyWritesAnyway,
    blk.BlkSegmentFlagsIgnored,
    blk.BlkDiscardUnmapAccepted,
    blk.BlkWriteZeroesUnmapKeepsData,
    blk.BlkZoneRequestsAccepted,
    blk.BlkPaddingNotZeroed,
    blk.BlkLifetimeReservedValue,
    blk.BlkMqLastQueueIgnored,
    blk.BlkMqMediumPerQueue,
    # zoned block devices (5.2.5.2, 5.2.6.2, VIRTIO_BLK_F_ZONED)
    *blk_zoned.BLK_ZONED_MUTANTS,
    # device suspend (3.4)
    suspend.RngSuspendBeforeDriverOk,
    suspend.BlkConfigWritableWhileSuspended,
    suspend.RngWorksWhileSuspended,
    suspend.BlkConfigNotifiedWhileSuspended,
    suspend.BlkConfigChangeNotNotifiedOnResume,
    suspend.RngIgnoresSuspend,
    suspend.RngStaysSuspended,
]


def _split_only(cls):
    """Mutants written before packed rings reach into split-ring internals and break layout-free
    duties too (which the packed suite would charge to packed clauses): as devices that do not
    offer VIRTIO_F_RING_PACKED, they stay on split rings and the packed suite skips them."""
    if cls.__module__ == packed.__name__ or getattr(cls, "both_layouts", False):
        return cls  # written for either layout: the split and the packed suites both judge it
    return type(cls.__name__, (cls,), {
        "__doc__": cls.__doc__,
        "__module__": cls.__module__,
        "base_features": cls.base_features & ~(1 << C.VIRTIO_F_RING_PACKED),
    })


def _mutant(cls) -> Mutant:
    return Mutant(name=cls.name, clause=cls.clause, factory=_split_only(cls), description=cls.__doc__.strip().splitlines()[0])


MUTANTS: list[Mutant] = [_mutant(cls) for cls in MUTANT_CLASSES]


def mutant_registry() -> dict[str, Mutant]:
    """Mutants by name."""
    return {m.name: m for m in MUTANTS}
