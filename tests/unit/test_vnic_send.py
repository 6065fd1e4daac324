"""The guest's vnic-send tool, compiled as the image builder compiles it and
run on this host over loopback: USO super-buffers and plain datagrams carry
the documented pattern, bad arguments are clear errors.  (Its ufo mode needs
a NIC and root; tests/e2e/test_offloads.py runs it in the guest.)"""
from __future__ import annotations

import math
import shutil
import socket
import subprocess

import pytest

from vnic.lab.image import RECIPE_DIR, TOOL_CFLAGS, TOOLS, build_tools

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc and libc6-dev")


@pytest.fixture(scope="module")
def vnic_send(tmp_path_factory):
    stage = tmp_path_factory.mktemp("stage")
    built = build_tools(stage)
    assert built == list(TOOLS.values())
    return str(stage / TOOLS["tools/vnic-send.c"])


def test_sources_compile_without_warnings():
    for src in TOOLS:
        r = subprocess.run(["gcc", *TOOL_CFLAGS, "-Werror", "-fsyntax-only", str(RECIPE_DIR / src)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def pattern(n: int, seq: int) -> bytes:
    return bytes((i * 7 + seq) & 0xFF for i in range(n))


def receive_all(sock: socket.socket) -> list[bytes]:
    sock.settimeout(0.5)
    out = []
    try:
        while True:
            out.append(sock.recv(70000))
    except TimeoutError:
        return out


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
                ids=["ipv4", "ipv6"])
def receiver(request):
    family, addr = request.param
    try:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((addr, 0))
    except OSError as exc:
        pytest.skip(f"no {addr}: {exc}")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    with s:
        yield s, addr, s.getsockname()[1]


def test_uso_sends_segmented_super_buffers(vnic_send, receiver):
    sock, addr, port = receiver
    total, gso, count = 10_001, 1400, 3
    r = subprocess.run([vnic_send, "uso", addr, str(port), str(total), str(gso), str(count)],
                       capture_output=True, text=True, timeout=10)
    if r.returncode and "UDP_SEGMENT" in r.stderr:
        pytest.skip(f"host kernel without UDP_SEGMENT: {r.stderr}")
    assert r.returncode == 0, r.stderr
    assert f"{math.ceil(total / gso)} segments each" in r.stdout
    got = receive_all(sock)
    nseg = math.ceil(total / gso)
    assert [len(d) for d in got] == ([gso] * (nseg - 1) + [total - gso * (nseg - 1)]) * count
    assert got == [pattern(total, seq)[k:k + gso] for seq in range(count)
                   for k in range(0, total, gso)]


def test_udp_sends_plain_datagrams(vnic_send, receiver):
    sock, addr, port = receiver
    r = subprocess.run([vnic_send, "udp", addr, str(port), "1000", "4"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert receive_all(sock) == [pattern(1000, seq) for seq in range(4)]


@pytest.mark.parametrize("args, rc, message", [
    ([], 2, "usage:"),
    (["frobnicate"], 2, "unknown mode 'frobnicate'"),
    (["uso", "10.0.0.1", "9000", "70000", "1000"], 2, "bad TOTAL_BYTES '70000'"),
    (["uso", "not-an-ip", "9000", "100", "10"], 2, "'not-an-ip' is not an IPv4 or IPv6 address"),
    (["udp", "127.0.0.1", "0", "10"], 2, "bad port '0'"),
    (["ufo", "nosuchnic0", "02:00:00:00:00:01", "10.0.0.2", "10.0.0.1", "9", "100", "8"], 1,
     "interface nosuchnic0: No such device"),
    (["ufo", "lo", "02:00:00:00:00:01", "10.0.0.2", "::1", "9", "100", "8"], 1,
     "not the same IP version"),
    (["ufo", "lo", "zz:00:00:00:00:01", "10.0.0.2", "10.0.0.1", "9", "100", "8"], 2,
     "bad MAC address"),
])
def test_errors_are_clear(vnic_send, args, rc, message):
    r = subprocess.run([vnic_send, *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == rc
    assert message in r.stderr
