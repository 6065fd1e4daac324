"""virtio and virtio-net feature bits, their user-facing names, and the
`+name,-name` syntax that changes the offered set."""
from __future__ import annotations

import enum
from collections.abc import Iterable

from .._native import lib
from ..errors import FeatureError


class F(enum.IntEnum):
    """Feature bit numbers (virtio 1.2, 5.1.3 and 6), as native/vnic.h declares
    them (enum vnic_feature_bit): C is their one source."""
    CSUM = lib.VNIC_F_CSUM
    GUEST_CSUM = lib.VNIC_F_GUEST_CSUM
    CTRL_GUEST_OFFLOADS = lib.VNIC_F_CTRL_GUEST_OFFLOADS
    MTU = lib.VNIC_F_MTU
    MAC = lib.VNIC_F_MAC
    GUEST_TSO4 = lib.VNIC_F_GUEST_TSO4
    GUEST_TSO6 = lib.VNIC_F_GUEST_TSO6
    GUEST_ECN = lib.VNIC_F_GUEST_ECN
    GUEST_UFO = lib.VNIC_F_GUEST_UFO
    HOST_TSO4 = lib.VNIC_F_HOST_TSO4
    HOST_TSO6 = lib.VNIC_F_HOST_TSO6
    HOST_ECN = lib.VNIC_F_HOST_ECN
    HOST_UFO = lib.VNIC_F_HOST_UFO
    MRG_RXBUF = lib.VNIC_F_MRG_RXBUF
    STATUS = lib.VNIC_F_STATUS
    CTRL_VQ = lib.VNIC_F_CTRL_VQ
    CTRL_RX = lib.VNIC_F_CTRL_RX
    CTRL_VLAN = lib.VNIC_F_CTRL_VLAN
    CTRL_RX_EXTRA = lib.VNIC_F_CTRL_RX_EXTRA
    GUEST_ANNOUNCE = lib.VNIC_F_GUEST_ANNOUNCE
    MQ = lib.VNIC_F_MQ
    CTRL_MAC_ADDR = lib.VNIC_F_CTRL_MAC_ADDR
    RING_INDIRECT_DESC = lib.VNIC_F_RING_INDIRECT_DESC
    RING_EVENT_IDX = lib.VNIC_F_RING_EVENT_IDX
    VERSION_1 = lib.VNIC_F_VERSION_1
    ACCESS_PLATFORM = lib.VNIC_F_ACCESS_PLATFORM
    RING_PACKED = lib.VNIC_F_RING_PACKED
    GUEST_USO4 = lib.VNIC_F_GUEST_USO4
    GUEST_USO6 = lib.VNIC_F_GUEST_USO6
    HOST_USO = lib.VNIC_F_HOST_USO
    HASH_REPORT = lib.VNIC_F_HASH_REPORT
    GUEST_HDRLEN = lib.VNIC_F_GUEST_HDRLEN
    RSS = lib.VNIC_F_RSS
    SPEED_DUPLEX = lib.VNIC_F_SPEED_DUPLEX


# User-facing names (CLI, control socket) to feature bits.
NAMES: dict[str, F] = {
    "csum": F.CSUM,
    "guest_csum": F.GUEST_CSUM,
    "mtu": F.MTU,
    "mac": F.MAC,
    "guest_tso4": F.GUEST_TSO4,
    "guest_tso6": F.GUEST_TSO6,
    "guest_ecn": F.GUEST_ECN,
    "guest_ufo": F.GUEST_UFO,
    "tso4": F.HOST_TSO4,
    "tso6": F.HOST_TSO6,
    "ecn": F.HOST_ECN,
    "ufo": F.HOST_UFO,
    "mrg_rxbuf": F.MRG_RXBUF,
    "status": F.STATUS,
    "ctrl_vq": F.CTRL_VQ,
    "ctrl_rx": F.CTRL_RX,
    "ctrl_rx_extra": F.CTRL_RX_EXTRA,
    "ctrl_vlan": F.CTRL_VLAN,
    "ctrl_mac_addr": F.CTRL_MAC_ADDR,
    "ctrl_guest_offloads": F.CTRL_GUEST_OFFLOADS,
    "guest_announce": F.GUEST_ANNOUNCE,
    "mq": F.MQ,
    "indirect_desc": F.RING_INDIRECT_DESC,
    "event_idx": F.RING_EVENT_IDX,
    "version_1": F.VERSION_1,
    "guest_uso4": F.GUEST_USO4,
    "guest_uso6": F.GUEST_USO6,
    "uso": F.HOST_USO,
    "speed_duplex": F.SPEED_DUPLEX,
    "guest_hdrlen": F.GUEST_HDRLEN,
    "packed": F.RING_PACKED,
    "hash_report": F.HASH_REPORT,
    "rss": F.RSS,
}

# What the device implements today; --features can only narrow or re-add
# from this set (offering a feature the data plane lacks would lie).
IMPLEMENTED = frozenset({
    F.VERSION_1, F.MAC, F.STATUS, F.MTU, F.MRG_RXBUF,
    F.RING_INDIRECT_DESC, F.RING_EVENT_IDX, F.RING_PACKED,
    F.CSUM, F.HOST_TSO4, F.HOST_TSO6, F.HOST_ECN, F.HOST_UFO, F.HOST_USO, F.GUEST_HDRLEN,
    F.GUEST_CSUM, F.GUEST_TSO4, F.GUEST_TSO6, F.GUEST_ECN, F.GUEST_UFO, F.GUEST_USO4, F.GUEST_USO6,
    F.CTRL_VQ, F.CTRL_RX, F.CTRL_RX_EXTRA, F.CTRL_VLAN, F.CTRL_MAC_ADDR, F.CTRL_GUEST_OFFLOADS,
    F.GUEST_ANNOUNCE, F.SPEED_DUPLEX, F.MQ, F.RSS, F.HASH_REPORT,
})
# What a device of more than one queue pair adds to its offer: the pairs,
# the table that spreads received flows over them, and the hash it used.
MULTIQUEUE = frozenset({F.MQ, F.RSS, F.HASH_REPORT})
# Offered unless --features says otherwise (default_offer); on one pair
# hash reporting is there for the asking (+hash_report): it lengthens
# every header by 8 bytes for a hash only the guest's RPS would use.
DEFAULT = IMPLEMENTED - MULTIQUEUE


def default_offer(queue_pairs: int) -> frozenset[F]:
    """DEFAULT, with MQ, RSS and HASH_REPORT for more than one queue pair."""
    return DEFAULT | MULTIQUEUE if queue_pairs > 1 else DEFAULT


# A modern-only device cannot work without VERSION_1.
REQUIRED = frozenset({F.VERSION_1})
# Offloads that make sense only on top of others (virtio 1.2, 5.1.3.1): a
# feature is offered only if at least one of its alternatives is.
DEPENDS = {
    F.HOST_TSO4: {F.CSUM}, F.HOST_TSO6: {F.CSUM}, F.HOST_UFO: {F.CSUM}, F.HOST_USO: {F.CSUM},
    F.HOST_ECN: {F.HOST_TSO4, F.HOST_TSO6},
    F.GUEST_TSO4: {F.GUEST_CSUM}, F.GUEST_TSO6: {F.GUEST_CSUM}, F.GUEST_UFO: {F.GUEST_CSUM},
    F.GUEST_USO4: {F.GUEST_CSUM}, F.GUEST_USO6: {F.GUEST_CSUM},
    F.GUEST_ECN: {F.GUEST_TSO4, F.GUEST_TSO6},
    F.CTRL_RX: {F.CTRL_VQ}, F.CTRL_VLAN: {F.CTRL_VQ}, F.CTRL_MAC_ADDR: {F.CTRL_VQ},
    F.CTRL_GUEST_OFFLOADS: {F.CTRL_VQ}, F.GUEST_ANNOUNCE: {F.CTRL_VQ}, F.MQ: {F.CTRL_VQ},
    F.RSS: {F.CTRL_VQ}, F.HASH_REPORT: {F.CTRL_VQ},
    F.CTRL_RX_EXTRA: {F.CTRL_RX},
}


def without_orphans(features: set[F]) -> set[F]:
    """Drop features whose prerequisites are gone (-csum takes TSO with it)."""
    result = set(features)
    changed = True
    while changed:
        orphans = {f for f in result if f in DEPENDS and not DEPENDS[f] & result}
        result -= orphans
        changed = bool(orphans)
    return result


def mask(features: Iterable[int]) -> int:
    """The bit mask of some feature bit numbers."""
    bits = 0
    for f in features:
        bits |= 1 << int(f)
    return bits


def names(bits: int) -> list[str]:
    """Known names of the set bits, then raw bit numbers for the rest."""
    by_bit = {int(f): n for n, f in NAMES.items()}
    out = []
    for bit in range(64):
        if bits >> bit & 1:
            out.append(by_bit.get(bit, f"bit{bit}"))
    return out


def apply_changes(offered: frozenset[F], spec: str) -> frozenset[F]:
    """Apply a comma list of +name / -name (a bare name means +name)."""
    result = set(offered)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        sign, name = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
        if name not in NAMES:
            raise FeatureError(f"unknown feature {name!r}; known: {', '.join(sorted(NAMES))}")
        feature = NAMES[name]
        if sign == "+":
            if feature not in IMPLEMENTED:
                raise FeatureError(f"feature {name!r} is not implemented by this vnic yet")
            result.add(feature)
        else:
            if feature in REQUIRED:
                raise FeatureError(f"feature {name!r} is required and cannot be removed")
            result.discard(feature)
    for feature in result - without_orphans(result):
        if feature not in offered:
            need = " or ".join(n for n, f in NAMES.items() if f in DEPENDS[feature])
            raise FeatureError(f"feature {names(1 << feature)[0]!r} needs {need}")
    return frozenset(without_orphans(result))
