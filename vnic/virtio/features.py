"""virtio and virtio-net feature bits, their user-facing names, and the
`+name,-name` syntax that changes the offered set."""
from __future__ import annotations

import enum
from collections.abc import Iterable

from ..errors import FeatureError


class F(enum.IntEnum):
    """Feature bit numbers (virtio 1.2, 5.1.3 and 6)."""
    CSUM = 0
    GUEST_CSUM = 1
    CTRL_GUEST_OFFLOADS = 2
    MTU = 3
    MAC = 5
    GUEST_TSO4 = 7
    GUEST_TSO6 = 8
    GUEST_ECN = 9
    GUEST_UFO = 10
    HOST_TSO4 = 11
    HOST_TSO6 = 12
    HOST_ECN = 13
    HOST_UFO = 14
    MRG_RXBUF = 15
    STATUS = 16
    CTRL_VQ = 17
    CTRL_RX = 18
    CTRL_VLAN = 19
    CTRL_RX_EXTRA = 20
    GUEST_ANNOUNCE = 21
    MQ = 22
    CTRL_MAC_ADDR = 23
    RING_INDIRECT_DESC = 28
    RING_EVENT_IDX = 29
    VERSION_1 = 32
    ACCESS_PLATFORM = 33
    GUEST_USO4 = 54
    GUEST_USO6 = 55
    HOST_USO = 56
    GUEST_HDRLEN = 59
    SPEED_DUPLEX = 63


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
}

# What the device implements today; --features can only narrow or re-add
# from this set (offering a feature the data plane lacks would lie).
IMPLEMENTED = frozenset({
    F.VERSION_1, F.MAC, F.STATUS, F.MTU, F.MRG_RXBUF,
    F.RING_INDIRECT_DESC, F.RING_EVENT_IDX,
    F.CSUM, F.HOST_TSO4, F.HOST_TSO6, F.HOST_ECN, F.HOST_UFO, F.HOST_USO, F.GUEST_HDRLEN,
    F.GUEST_CSUM, F.GUEST_TSO4, F.GUEST_TSO6, F.GUEST_ECN, F.GUEST_UFO, F.GUEST_USO4, F.GUEST_USO6,
    F.CTRL_VQ, F.CTRL_RX, F.CTRL_RX_EXTRA, F.CTRL_VLAN, F.CTRL_MAC_ADDR, F.CTRL_GUEST_OFFLOADS,
    F.GUEST_ANNOUNCE, F.SPEED_DUPLEX,
})
DEFAULT = IMPLEMENTED
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
    F.CTRL_GUEST_OFFLOADS: {F.CTRL_VQ}, F.GUEST_ANNOUNCE: {F.CTRL_VQ},
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
