"""The control socket (JSON lines, mode 0600) and its Python client: every
command works on a served device, bad requests get clear errors, and a
client that hangs up mid-request leaves the device serving."""
from __future__ import annotations

import os
import socket
import stat

import pytest

from vnic.control import Client, ControlError, ControlServer
from vnic.device import Device


@pytest.fixture
def control(tmp_path):
    with Device("null") as dev:
        server = ControlServer(tmp_path / "ctl", dev)
        server.start()
        yield dev, Client(tmp_path / "ctl"), tmp_path / "ctl"
        server.close()


def test_socket_is_private(control):
    _, _, path = control
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_info_stats_link_mode(control):
    dev, client, _ = control
    info = client.info()
    assert info["backend"] == "null" and "tso4" in info["offered_features"]
    assert info["rx_filter"]["promisc"] is True
    assert client.stats()["tx_packets"] == 0
    assert len(client.stats(per_queue=True)) == 1
    assert client.link(False) == {"link_up": False}
    assert dev.net.link_up is False
    assert client.mode(rx_coalesce=False) == {"tx": "segment", "rx_coalesce": False}
    with pytest.raises(ControlError, match="needs a TAP backend"):
        client.mode(tx="passthrough")
    with pytest.raises(ControlError, match="host GRO needs a TAP backend"):
        client.mode(tap_gro_us=0)


def test_features_change_the_next_offer(control):
    dev, client, _ = control
    result = client.features(disable=["tso4", "tso6"])
    assert "tso4" not in result["offered"] and "tso6" not in result["offered"]
    assert "tso4" not in dev.offered_features
    assert "tso4" in client.features(enable=["tso4"])["offered"]
    with pytest.raises(ControlError, match="unknown feature 'warp'"):
        client.features(enable=["warp"])


def test_bad_requests_get_clear_errors(control):
    _, client, path = control
    with pytest.raises(ControlError, match="unknown command 'frobnicate'"):
        client.call("frobnicate")
    with pytest.raises(ControlError, match='"up": true or false'):
        client.call("link", up="sideways")
    with pytest.raises(ControlError, match="guest_announce"):
        client.announce()                                  # no guest has negotiated it
    with socket.socket(socket.AF_UNIX) as s:               # not JSON at all
        s.connect(str(path))
        s.sendall(b"{not json\n")
        assert b'"ok": false' in s.recv(4096)


def test_client_hanging_up_mid_request_leaves_the_device_serving(control):
    _, client, path = control
    for _ in range(5):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b'{"cmd": "st')                      # and gone
    assert client.stats()["rx_packets"] == 0


def test_reset_restores_the_start_up_configuration_and_zeroes_counters(tmp_path):
    from tests.support.client import VfioUserClient
    from tests.support.driver import VirtioNetDriver
    from tests.support.frames import udp_frame

    with Device("null", features="-uso") as dev:
        dev.serve(tmp_path / "vnic.sock")
        server = ControlServer(tmp_path / "ctl", dev)
        server.start()
        client = Client(tmp_path / "ctl")
        qemu = VfioUserClient(dev.socket_path).attach()
        driver = VirtioNetDriver(qemu)
        driver.start()
        try:
            for i in range(5):
                driver.transmit(udp_frame(100, i))
            driver.complete_tx(5)
            client.features(disable=["tso4"], enable=["uso"])
            client.link(False)
            client.mode(rx_coalesce=False)
            assert client.stats()["tx_packets"] == 5

            info = client.reset()
            assert info["replugged"] is False and info["link_up"] is True
            assert "tso4" in info["offered_features"] and "uso" not in info["offered_features"]
            assert info["rx_coalesce"] is True and info["tx_mode"] == "segment"
            assert client.stats()["tx_packets"] == 0
            assert client.stats(per_queue=True)[0]["tx_bytes"] == 0
            # counting goes on from the reset
            driver.transmit(udp_frame(100, 9))
            driver.complete_tx(1)
            assert client.stats()["tx_packets"] == 1
            assert dev.net.stats()["tx_packets"] == 6          # the device's own counters never went back
        finally:
            driver.close()
            qemu.close()
            server.close()


def test_replug_without_qemu_monitor_is_a_clear_error(control):
    dev, client, _ = control
    with pytest.raises(ControlError, match="no QMP socket"):
        client.replug()
    with pytest.raises(ControlError, match="no QMP socket"):
        client.features(disable=["tso4"], replug=True)
    assert "tso4" not in dev.offered_features      # the offer changed all the same
    with pytest.raises(ControlError, match='"replug" is true or false'):
        client.call("reset", replug="yes")
    dev.attach_qmp("/nonexistent/qmp.sock")
    with pytest.raises(ControlError, match="replug failed: not serving"):
        client.replug()


def test_flows_command_and_its_bad_input(control):
    _dev, client, _ = control
    result = client.flows(top=5)
    assert result["flows"] == [] and result["table"]["max_entries"] == 4096
    for bad, message in (({"top": -1}, '"top" is a number'), ({"top": "x"}, '"top" is a number'),
                         ({"sort": "colour"}, "cannot sort flows by 'colour'")):
        with pytest.raises(ControlError, match=message):
            client.call("flows", **bad)
    assert client.info()["backend"] == "null"          # still serving


def test_capture_through_the_socket(control, tmp_path, monkeypatch):
    _, client, _ = control
    monkeypatch.chdir(tmp_path)
    started = client.capture("c.pcapng", what="guest", direction="tx", snaplen=128)
    assert started["running"] is True and started["file"] == str(tmp_path / "c.pcapng")
    assert (started["what"], started["direction"], started["snaplen"]) == ("guest", "tx", 128)
    assert client.capture_status()["running"] is True
    done = client.capture_stop()
    assert done["running"] is False and done["bytes_written"] == (tmp_path / "c.pcapng").stat().st_size > 0
    assert client.capture_status() == {"running": False}


@pytest.mark.parametrize("request_, message", [
    ({"action": "start"}, 'needs "file"'),
    ({"action": "start", "file": "rel.pcapng"}, "absolute path"),
    ({"action": "start", "file": "/tmp/x.pcapng", "snaplen": "all"}, "snaplen"),
    ({"action": "start", "file": "/tmp/x.pcapng", "what": {"a": 1}}, "what"),
    ({"action": "start", "file": ["/tmp/x"]}, "absolute path"),
    ({"action": "pause"}, '"action" is start, stop or status'),
    ({"action": "stop"}, "no capture is on"),
])
def test_bad_capture_requests_get_clear_errors(control, request_, message):
    _, client, _ = control
    with pytest.raises(ControlError, match=message):
        client.call("capture", **request_)
    assert client.capture_status() == {"running": False}


def test_faults_through_the_socket(control):
    dev, client, _ = control
    state = client.faults(drop=2.5, seed=11, direction="tx")
    assert state["queues"][0]["tx"] == {"drop": 2.5, "duplicate": 0.0, "corrupt": 0.0, "bad_csum": 0.0,
                                        "reorder": 0.0, "delay": 0.0, "jitter": 0.0, "rate": 0.0, "seed": 11}
    assert state["queues"][0]["rx"]["drop"] == 0.0
    assert client.starve_rx(10_000)["rx_starving"] is True
    assert client.flap(10_000)["link_flapping"] is True and dev.net.link_up is False
    cleared = client.clear_faults()
    assert cleared["rx_starving"] is False and cleared["queues"][0]["tx"]["drop"] == 0.0
    assert dev.net.link_up is True                        # the flap ended early, the link is back
    assert client.faults_state() == cleared
    stats = client.stats()
    assert stats["fault_rx_starves"] == 1 and stats["fault_link_flaps"] == 1


@pytest.mark.parametrize("request_, message", [
    ({"set": {"loss": 1}}, 'faults "set" is an object'),
    ({"set": [1]}, 'faults "set" is an object'),
    ({"set": {"drop": "1"}}, "percentage"),
    ({"set": {"queue": 4}}, "queue pair from 0 to 0"),
    ({"rx_starve_ms": "long"}, "milliseconds"),
    ({"flap_ms": 0}, "milliseconds"),
    ({"clear": 1}, '"clear" is true or false'),
])
def test_bad_fault_requests_get_clear_errors(control, request_, message):
    _, client, _ = control
    with pytest.raises(ControlError, match=message):
        client.call("faults", **request_)
    state = client.faults_state()
    assert state["rx_starving"] is False and state["link_flapping"] is False
    assert all(rate == 0 for way in state["queues"][0].values() for name, rate in way.items() if name != "seed")
