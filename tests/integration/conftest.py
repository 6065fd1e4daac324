"""Every integration test that brings up the in-repo driver runs on both
virtqueue layouts, split (virtio 1.2, 2.7) and packed (2.8): its id ends in
[split] or [packed].  A test that writes one layout's structures by hand
says so with @pytest.mark.ring("split") or ("packed")."""
from __future__ import annotations

import pytest

from tests.support import driver
from vnic.telemetry.capture import Capture, CaptureSpec

LAYOUTS = ("split", "packed")
# the fixtures through which a test reaches a driven device
DRIVEN = {"served_device", "tap_device", "serve"}


def pytest_generate_tests(metafunc):
    if "ring" not in metafunc.fixturenames or not DRIVEN & set(metafunc.fixturenames):
        return
    marker = metafunc.definition.get_closest_marker("ring")
    metafunc.parametrize("ring", marker.args if marker else LAYOUTS, indirect=True)


@pytest.fixture(autouse=True)
def ring(request, monkeypatch):
    """The layout every VirtioNetDriver of this test asks for."""
    layout = getattr(request, "param", None)
    monkeypatch.setattr(driver, "DEFAULT_RING", layout)
    return layout


@pytest.fixture
def capture_on(tmp_path):
    """capture_on(dev, what=..., ...) -> (Capture, path): one capture at a
    time on a harness's device, stopped at the end."""
    made: list[Capture] = []

    def start(dev, name: str = "c.pcapng", **kw):
        cap = Capture(dev.device.native, "vnic:test")
        made.append(cap)
        path = tmp_path / name
        cap.start(CaptureSpec(str(path), **kw))
        return cap, path

    yield start
    for cap in made:
        cap.close()
