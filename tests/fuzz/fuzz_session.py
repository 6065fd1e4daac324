"""fuzz_session.py - the Python vfio-user session under atheris: every
message a client can send (any command, flags, body and fds) dispatched
to the real device model (VirtioNet on the null backend behind its PCI
transport), as Session.run() would dispatch it.  Replies are counted, not
sent.  What must never happen: an exception escaping the dispatcher, or
the session logging an internal error (a traceback): both end the run as
a crash.  Between inputs the client "goes away", as between two QEMUs.

Input: messages of [u16 command][u32 flags][u8 fds][u16 length][body];
the fds byte's bits attach an eventfd (1), a 1 MiB memfd (2), a pipe
(4) and a second eventfd (8).

    python tests/fuzz/fuzz_session.py [libFuzzer flags] [corpus dirs]
(scripts/fuzz.sh session runs it.)"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import struct
import sys

import atheris

with atheris.instrument_imports(include=["vnic"]):
    from vnic.backends.null import NullBackend
    from vnic.net.virtio_net import VirtioNet
    from vnic.vfio_user import protocol as P
    from vnic.vfio_user import session as S

MESSAGE = struct.Struct("<HIBH")
MAX_MESSAGES = 64
MEMFD_SIZE = 1 << 20


class InternalError(Exception):
    """The session logged a traceback: a bug the input reached."""


class RaiseOnError(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            raise InternalError(record.getMessage())


class Counting(S.Session):
    """A Session whose replies are counted instead of sent."""
    replies = 0

    def _send(self, message: bytes, fds: list[int]) -> None:
        Counting.replies += 1
        for fd in fds:
            os.close(fd)


def make_fds(spec: int) -> list[int]:
    fds = []
    if spec & 1:
        fds.append(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
    if spec & 2:
        fd = os.memfd_create("fuzz-guest", os.MFD_CLOEXEC)
        os.ftruncate(fd, MEMFD_SIZE)
        fds.append(fd)
    if spec & 4:
        r, w = os.pipe()
        os.close(r)
        fds.append(w)
    if spec & 8:
        fds.append(os.eventfd(0, os.EFD_CLOEXEC))
    return fds


def messages(data: bytes):
    pos = 0
    for msg_id in range(MAX_MESSAGES):
        if pos + MESSAGE.size > len(data):
            return
        command, flags, fds, length = MESSAGE.unpack_from(data, pos)
        pos += MESSAGE.size
        body = data[pos:pos + length]
        pos += length
        yield P.Header(msg_id, command, P.HEADER_SIZE + len(body), flags), body, fds


def main() -> None:
    logging.getLogger("vnic").addHandler(RaiseOnError())
    logging.getLogger("vnic").setLevel(logging.WARNING)
    logging.getLogger("vnic").propagate = False          # warnings are the expected answers
    device = VirtioNet(NullBackend(), mac=bytes.fromhex("525400123456"), queue_pairs=2)
    ours, _theirs = socket.socketpair()
    session = Counting(ours, device.transport)
    session.model.attach_channel(session.chan)
    count = [0, 0]                         # messages, inputs
    report = lambda: print(f"vnic-fuzz: messages: {count[0]}", file=sys.stderr, flush=True)
    atexit.register(report)                # libFuzzer ends with exit(): also every 4096 inputs

    def one_input(data: bytes) -> None:
        session.negotiated = True          # VERSION is fuzzed too, but need not come first
        try:
            for header, body, spec in messages(data):
                count[0] += 1
                session._dispatch(header, body, make_fds(spec))
        finally:
            device.transport.client_gone()
        count[1] += 1
        if count[1] % 4096 == 0:
            report()

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
