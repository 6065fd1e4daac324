"""The TAP's host GRO, changed while the device runs: on, the host (and a
capture on the TAP) gets the device's wire segments of a TSO super-frame
merged again; at 0 (GRO flushing after every write), every wire frame as
the device cut it; on again, merged."""
from __future__ import annotations

import pytest

from tests.engine.frames import partial_csum
from tests.integration.test_flows import OFFLOADED, send
from vnic.backends.tap import TapBackend
from vnic.control import Client, ControlError, ControlServer
from vnic.device import Device
from vnic.lab.netns import NetNS

pytestmark = [pytest.mark.root, pytest.mark.netns]     # TAPs in namespaces of its own

GUEST_FRAME, TSO_HEADER, _, WIRE_FRAMES, HEADERS = OFFLOADED["tso4"]     # 10000 bytes, MSS 1448


def send_super_frame_and_capture(dev) -> list[bytes]:
    send(dev.driver, [partial_csum(GUEST_FRAME)], header=TSO_HEADER)
    return dev.tap.capture(WIRE_FRAMES, timeout=1.0)


def test_host_gro_changes_while_the_device_runs(tap_device):
    tap = tap_device.tap.backend
    assert tap.gro_flush_us == TapBackend.DEFAULT_GRO_FLUSH_US
    merged = send_super_frame_and_capture(tap_device)
    assert len(merged) < WIRE_FRAMES and max(map(len, merged)) > 1514

    tap.set_gro(0)
    wire = send_super_frame_and_capture(tap_device)
    assert len(wire) == WIRE_FRAMES and max(map(len, wire)) <= 1514
    # what reached the host is the same bytes either way
    assert sum(map(len, wire)) - sum(map(len, merged)) == (WIRE_FRAMES - len(merged)) * HEADERS

    tap.set_gro(5000)
    assert len(send_super_frame_and_capture(tap_device)) < WIRE_FRAMES
    stats = tap_device.device.stats()
    assert stats["tx_tso_packets"] == 3 and stats["tx_drops_backend"] == 0


def test_control_socket_mode_and_reset(tmp_path):
    with NetNS() as ns, Device(TapBackend("vnicgro1", ns.name)) as dev:
        server = ControlServer(tmp_path / "ctl", dev)
        server.start()
        try:
            client = Client(tmp_path / "ctl")
            assert client.info()["tap_gro_us"] == TapBackend.DEFAULT_GRO_FLUSH_US
            assert client.mode(tap_gro_us=0) == {"tx": "segment", "rx_coalesce": True, "tap_gro_us": 0}
            assert dev.backend._sysfs("gro_flush_timeout") == "0"
            with pytest.raises(ControlError, match="whole number of microseconds"):
                client.call("mode", tap_gro_us="lots")
            with pytest.raises(ControlError, match="flush timeout"):
                client.mode(tx="passthrough", tap_gro_us=-1)
            assert dev.info()["tx_mode"] == "segment"          # a refused request changes nothing
            with pytest.raises(ControlError, match="unknown TX mode"):
                client.call("mode", tx=["segment"], tap_gro_us=300)
            assert dev.info()["tap_gro_us"] == 0
            assert client.reset()["tap_gro_us"] == TapBackend.DEFAULT_GRO_FLUSH_US
            assert dev.backend._sysfs("gro_flush_timeout") == str(TapBackend.DEFAULT_GRO_FLUSH_US * 1000)
        finally:
            server.close()


def test_a_tap_opened_without_gro_cannot_gain_it_and_bad_values_are_refused():
    with NetNS() as ns:
        tap = TapBackend("vnicgro0", ns.name, gro_flush_us=0)
        tap.open()
        try:
            with pytest.raises(ValueError, match="opened without host GRO"):
                tap.set_gro(2000)
            tap.set_gro(0)                          # off stays possible
            for bad in (-1, TapBackend.MAX_GRO_FLUSH_US + 1, "2000", True):
                with pytest.raises(ValueError, match="flush timeout"):
                    tap.set_gro(bad)
            assert tap.gro_flush_us == 0
        finally:
            tap.close()


def test_a_kernel_that_refuses_the_timeout_leaves_reset_working(tmp_path, monkeypatch):
    """A read-only /sys (say): the TAP reports the GRO really in force, and
    reset, which asks for the start-up modes again, still succeeds."""
    monkeypatch.setattr(TapBackend, "_sysfs", lambda self, attr, value=None: None)
    with NetNS() as ns, Device(TapBackend("vnicgro2", ns.name)) as dev:
        assert dev.info()["tap_gro_us"] == 0
        dev.set_link(False)
        dev.set_mode(rx_coalesce=False)
        info = dev.reset()
        assert (info["link_up"], info["rx_coalesce"], info["tap_gro_us"]) == (True, True, 0)
