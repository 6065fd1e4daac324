"""Guest tooling without QEMU: console parsing, iperf3 report parsing, cpio writer."""
import io
import json

import pytest

from vnic.lab.guest import parse_console
from vnic.lab.image import write_cpio
from vnic.lab.iperf import Progress, guest_script, parse_output


def test_parse_console_output_is_byte_exact():
    log = ("[ 1.0] boot\n@@VNIC-READY uptime=3.1 nic=eth0 driver=virtio_net carrier=1@@\n"
           "@@VNIC-BEGIN@@\nline 1\nno newline@@VNIC-END rc=3@@\n[ 4.0] reboot: Power down\n")
    p = parse_console(log)
    assert p["rc"] == 3 and p["output"] == "line 1\nno newline" and p["error"] is None
    assert p["ready"] == {"uptime": "3.1", "nic": "eth0", "driver": "virtio_net", "carrier": "1"}


def test_parse_console_error_and_unfinished():
    p = parse_console("@@VNIC-ERROR no-nic: nothing@@\n")
    assert p["error"] == "no-nic: nothing" and p["rc"] is None
    p = parse_console("@@VNIC-BEGIN@@\npartial")
    assert p["rc"] is None and p["output"] == "partial"


def _report(bps):
    return {"end": {"sum_sent": {"bits_per_second": bps, "retransmits": 2},
                    "sum_received": {"bits_per_second": bps}}}


def _iperf_console(tx_bps: float, rx_bps: float) -> str:
    """What guest_script prints: each direction's report as it completes."""
    script = guest_script()
    assert script.index("@@TXEND@@") < script.index("-R")       # tx shown before rx runs
    return (f"@@TX@@\n{json.dumps(_report(tx_bps))}\n@@TXEND@@\n"
            f"@@RX@@\n{json.dumps(_report(rx_bps))}\n@@DONE@@\n")


def test_progress_reports_boot_and_each_direction_as_it_completes():
    lines: list[str] = []
    progress = Progress(lines.append, seconds=3)
    console = "@@VNIC-READY nic=1@@\r\n" + _iperf_console(1.5e9, 2.5e9)
    cut = console.index("@@RX@@")
    for i in range(0, cut, 7):                       # the console arrives in pieces
        progress.feed(console[i:min(i + 7, cut)])
    assert len(lines) == 2 and "guest booted" in lines[0]
    assert "guest->host: 1.50 Gbit/s, 2 retransmits" in lines[1]
    progress.feed(console[cut:])
    assert len(lines) == 3 and "host->guest: 2.50 Gbit/s" in lines[2]
    progress.feed("more console")
    assert len(lines) == 3                           # each said once


def test_parse_iperf_output():
    r = parse_output(_iperf_console(1.5e9, 2.5e9))
    assert r["tx_gbps"] == pytest.approx(1.5) and r["rx_gbps"] == pytest.approx(2.5)
    assert r["tx_retransmits"] == 2


def test_parse_iperf_error_is_reported():
    out = '@@TX@@\n{"error": "unable to connect"}\n@@TXEND@@\n@@RX@@\n{}\n@@DONE@@\n'
    with pytest.raises(RuntimeError, match="unable to connect"):
        parse_output(out)
    assert "iperf3 -c 10.213.0.1" in guest_script()


def _read_newc(data: bytes):
    entries, off = {}, 0
    while True:
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off: off + size]
        off += size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body, (f[9], f[10]))


def test_cpio_newc_roundtrip(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/tool").write_bytes(b"abc")
    (tmp_path / "usr/bin/tool").chmod(0o755)
    (tmp_path / "bin").symlink_to("usr/bin")
    buf = io.BytesIO()
    write_cpio(tmp_path, buf, extra_nodes=[("dev/console", 0o20600, 5, 1)])
    e = _read_newc(buf.getvalue())
    assert list(e) == ["bin", "usr", "usr/bin", "usr/bin/tool", "dev/console"]
    assert e["usr/bin/tool"][0] == 0o100755 and e["usr/bin/tool"][1] == b"abc"
    assert e["bin"][1] == b"usr/bin"
    assert e["dev/console"][2] == (5, 1)
