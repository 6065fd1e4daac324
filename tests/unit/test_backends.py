"""Backend specs and the --tap-gro option."""
import pytest

from vnic import backends
from vnic.backends import BackendError, TapBackend, parse, parse_tap_gro


def test_tap_gro_values():
    assert parse_tap_gro("on") == TapBackend.DEFAULT_GRO_FLUSH_US
    assert parse_tap_gro("off") == 0
    assert parse_tap_gro("5000") == 5000


@pytest.mark.parametrize("bad", ["", "yes", "-1", "1000001", "2ms"])
def test_bad_tap_gro_is_a_clear_error(bad):
    with pytest.raises(BackendError, match="--tap-gro"):
        parse_tap_gro(bad)


def test_tap_spec_carries_the_gro_timeout():
    tap = parse("tap:vnic9@ns1", tap_gro_us=0)
    assert (tap.ifname, tap.netns, tap.gro_flush_us) == ("vnic9", "ns1", 0)
    assert parse("tap:vnic9").gro_flush_us == TapBackend.DEFAULT_GRO_FLUSH_US
    assert isinstance(parse("null", tap_gro_us=0), backends.NullBackend)


def test_out_of_range_timeout_is_refused_by_the_backend_itself():
    with pytest.raises(ValueError, match="GRO flush timeout"):
        TapBackend("vnic9", gro_flush_us=-5)
