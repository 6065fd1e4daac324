"""The markers for what a test needs: a machine without it skips the test
with the reason, and VNIC_REQUIRE_ALL=1 turns that skip into a failure."""
from __future__ import annotations

import pytest

from tests import conftest as suite


class FakeItem:
    def __init__(self, *markers: str):
        self.markers = set(markers)

    def get_closest_marker(self, name: str):
        return name if name in self.markers else None


def test_a_missing_requirement_names_its_reason(monkeypatch):
    monkeypatch.setitem(suite.REQUIREMENTS, "root", (lambda: False, "needs root (test)"))
    monkeypatch.setitem(suite.REQUIREMENTS, "netns", (lambda: True, "needs netns (test)"))
    assert suite.missing_requirement(FakeItem("root", "netns")) == "needs root (test)"
    assert suite.missing_requirement(FakeItem("netns")) is None
    assert suite.missing_requirement(FakeItem()) is None


def test_setup_skips_or_fails_by_vnic_require_all(monkeypatch):
    monkeypatch.setitem(suite.REQUIREMENTS, "qemu", (lambda: False, "needs qemu (test)"))
    monkeypatch.delenv("VNIC_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs qemu"):
        suite.pytest_runtest_setup(FakeItem("qemu"))
    monkeypatch.setenv("VNIC_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match="VNIC_REQUIRE_ALL=1 and this test needs qemu"):
        suite.pytest_runtest_setup(FakeItem("qemu"))
    suite.pytest_runtest_setup(FakeItem())          # nothing needed: runs
