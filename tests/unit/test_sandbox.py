"""Whom `vnic serve` becomes after set-up (vnic.sandbox.target_user)."""
from __future__ import annotations

import os

import pytest

from vnic.errors import ConfigError
from vnic.sandbox import DEFAULT_USER, target_user

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the choice differs for root")


def test_an_unknown_user_is_a_config_error():
    with pytest.raises(ConfigError, match="no-such-vnic-user: no such user"):
        target_user("no-such-vnic-user")


@as_root
def test_root_becomes_nobody_by_default():
    entry = target_user(None)
    assert entry is not None and entry.pw_name == DEFAULT_USER and entry.pw_uid != 0


@as_root
def test_user_root_stays_root():
    assert target_user("root") is None
