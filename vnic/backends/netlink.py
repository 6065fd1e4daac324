"""A TAP's kernel counters over rtnetlink (RTM_GETLINK), with no `ip`
process and no privilege: the socket is opened where the TAP lives (in
its namespace, before vnic gives up root) and asked again at every stats
read.  pyroute2 would do this too, but its sockets open lazily in whatever
namespace the asking thread is in, and asking needs no more than this."""
from __future__ import annotations

import errno
import socket
import struct

NLMSG = struct.Struct("=IHHII")        # struct nlmsghdr
IFINFO = struct.Struct("=BxHiII")      # struct ifinfomsg
RTATTR = struct.Struct("=HH")          # struct rtattr
RTM_NEWLINK, RTM_GETLINK = 16, 18
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
IFLA_IFNAME, IFLA_STATS64 = 3, 23
STATS64_TX_DROPPED = 7                 # rtnl_link_stats64: the 8th u64


def _align(n: int) -> int:
    return (n + 3) & ~3


class LinkStats:
    """A netlink socket in the calling thread's network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.settimeout(2.0)
        self.seq = 0

    def tx_dropped(self, ifname: str) -> int | None:
        """The interface's tx_dropped (frames its queue could not take on
        their way to us), or None if it is gone."""
        self.seq += 1
        name = ifname.encode() + b"\0"
        attr = RTATTR.pack(RTATTR.size + len(name), IFLA_IFNAME) + name
        attr += bytes(_align(len(attr)) - len(attr))
        body = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr
        self.sock.send(NLMSG.pack(NLMSG.size + len(body), RTM_GETLINK, NLM_F_REQUEST, self.seq, 0) + body)
        reply = self.sock.recv(65536)
        _length, kind, _flags, _seq, _pid = NLMSG.unpack_from(reply)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", reply, NLMSG.size)
            if -err == errno.ENODEV:
                return None
            raise OSError(-err, f"RTM_GETLINK {ifname}: {errno.errorcode.get(-err, err)}")
        return self._stat(reply, NLMSG.size + IFINFO.size)

    @staticmethod
    def _stat(reply: bytes, pos: int) -> int | None:
        while pos + RTATTR.size <= len(reply):
            length, kind = RTATTR.unpack_from(reply, pos)
            if length < RTATTR.size:
                break
            if kind == IFLA_STATS64:
                return int(struct.unpack_from("=Q", reply, pos + RTATTR.size + 8 * STATS64_TX_DROPPED)[0])
            pos += _align(length)
        return None

    def close(self) -> None:
        self.sock.close()
