"""Feature names and the `+name,-name` syntax that narrows what is offered."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnic.backends.null import NullBackend
from vnic.net.virtio_net import VirtioNet
from vnic.virtio import features as feat
from vnic.virtio.features import DEFAULT, IMPLEMENTED, NAMES, F, FeatureError, apply_changes


def test_every_named_feature_is_implemented():
    assert set(NAMES.values()) <= IMPLEMENTED


def test_unimplemented_feature_cannot_be_added(monkeypatch):
    """The guard for a name known before its feature lands (as `packed` was)."""
    monkeypatch.setattr(feat, "IMPLEMENTED", IMPLEMENTED - {F.RING_PACKED})
    offered = DEFAULT - {F.RING_PACKED}
    with pytest.raises(FeatureError, match="'packed' is not implemented"):
        apply_changes(offered, "+packed")
    with pytest.raises(FeatureError, match="not implemented"):
        apply_changes(offered, "packed")                 # a bare name means +name


def test_unknown_name_error_lists_known_names():
    with pytest.raises(FeatureError) as info:
        apply_changes(DEFAULT, "+warp_drive")
    message = str(info.value)
    assert "unknown feature 'warp_drive'" in message
    known = message.split("known:", 1)[1]
    assert sorted(n.strip() for n in known.split(",")) == sorted(NAMES)


def test_removing_event_idx():
    result = apply_changes(DEFAULT, "-event_idx")
    assert result == DEFAULT - {F.RING_EVENT_IDX}
    assert apply_changes(result, "+event_idx") == DEFAULT


def test_version_1_cannot_be_removed():
    with pytest.raises(FeatureError, match="'version_1' is required"):
        apply_changes(DEFAULT, "-version_1")


def test_list_syntax_tolerates_spaces_and_empty_items():
    result = apply_changes(DEFAULT, " -mrg_rxbuf , ,-indirect_desc,")
    assert result == DEFAULT - {F.MRG_RXBUF, F.RING_INDIRECT_DESC}
    assert apply_changes(DEFAULT, "") == DEFAULT


def test_removing_what_is_not_offered_is_harmless():
    assert F.HASH_REPORT not in DEFAULT
    assert apply_changes(DEFAULT, "-hash_report") == DEFAULT


def test_packed_rings_are_offered_and_can_be_turned_off():
    assert F.RING_PACKED in DEFAULT
    assert apply_changes(DEFAULT, "-packed") == DEFAULT - {F.RING_PACKED}


def test_default_is_implemented_and_includes_version_1():
    assert DEFAULT <= IMPLEMENTED
    assert F.VERSION_1 in DEFAULT


def test_names_and_mask():
    bits = feat.mask([F.VERSION_1, F.MRG_RXBUF])
    assert bits == 1 << 32 | 1 << 15
    assert feat.names(bits) == ["mrg_rxbuf", "version_1"]
    assert feat.names(1 << 40 | 1) == ["csum", "bit40"]


@given(st.lists(st.tuples(st.sampled_from("+-"), st.sampled_from(sorted(n for n, f in NAMES.items()
                                                                      if f in IMPLEMENTED))),
                max_size=12))
def test_any_change_list_stays_implemented_and_modern(changes):
    spec = ",".join(sign + name for sign, name in changes)
    try:
        result = apply_changes(DEFAULT, spec)
    except FeatureError as exc:
        if "needs" in str(exc):
            # only a feature the user added to an offer without it, whose
            # prerequisites the same list took away (+mq,-ctrl_vq)
            name = str(exc).split("'")[1]
            last = {n: s for s, n in changes}
            assert last.get(name) == "+" and NAMES[name] not in DEFAULT, exc
            return
        assert "version_1" in str(exc)
        return
    assert result <= IMPLEMENTED
    assert F.VERSION_1 in result
    # the last word about a name wins, except that a feature goes with the
    # features it depends on (-csum takes the TSOs along)
    depends = getattr(feat, "DEPENDS", {})
    last = {name: sign for sign, name in changes}
    for name, sign in last.items():
        f = NAMES[name]
        if sign == "-":
            assert f not in result
        elif f not in result:
            assert f in depends and not depends[f] & result


def test_device_offers_exactly_the_configured_set():
    chosen = apply_changes(DEFAULT, "-event_idx,-mrg_rxbuf")
    device = VirtioNet(NullBackend(), features=chosen)
    try:
        assert device.offered_features() == feat.mask(chosen)
        assert not device.offered_features() & (1 << F.RING_EVENT_IDX | 1 << F.MRG_RXBUF)
    finally:
        device.close()


def test_cli_takes_a_feature_list_that_starts_with_a_minus():
    from vnic.cli import _glue_feature_lists, build_parser
    argv = _glue_feature_lists(["vm", "--iperf", "3", "--features", "-csum,-tso4", "--json"])
    args = build_parser().parse_args(argv)
    assert args.features == "-csum,-tso4" and args.iperf == 3 and args.json
    assert _glue_feature_lists(["vm", "--features", "--json"]) == ["vm", "--features", "--json"]


def test_mq_rss_and_hash_report_are_offered_only_with_more_than_one_pair():
    multi = {F.MQ, F.RSS, F.HASH_REPORT}
    assert multi <= IMPLEMENTED and not multi & DEFAULT
    assert feat.default_offer(1) == DEFAULT and feat.default_offer(2) == DEFAULT | multi
    with pytest.raises(FeatureError, match="'mq' needs ctrl_vq"):
        apply_changes(DEFAULT, "+mq,-ctrl_vq")
    assert not multi & apply_changes(feat.default_offer(4), "-ctrl_vq")   # they go with ctrl_vq
    assert F.HASH_REPORT in apply_changes(DEFAULT, "+hash_report")      # one pair: on request


def test_a_feature_list_given_as_text_is_refused_where_it_enters():
    from vnic.backends.null import NullBackend
    from vnic.errors import ConfigError
    from vnic.net.virtio_net import VirtioNet
    with pytest.raises(ConfigError, match="Feature members"):
        VirtioNet(NullBackend(), features="+hash_report")   # type: ignore[arg-type]
