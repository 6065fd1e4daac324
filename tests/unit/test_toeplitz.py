"""The C Toeplitz hash (native/rss.c) against the published RSS vectors:
the input is source address, destination address, then source and
destination port, all in network order."""
from __future__ import annotations

import ipaddress

import pytest

from tests.support.rss_vectors import IPV4, IPV6, KEY
from vnic._native import ffi, lib


def toeplitz(data: bytes) -> int:
    return int(lib.vnic_test_toeplitz(KEY, ffi.from_buffer(data), len(data)))


def hash_input(dst: str, dport: int, src: str, sport: int, ports: bool) -> bytes:
    addrs = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    return addrs + (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") if ports else b"")


@pytest.mark.parametrize("row", IPV4 + IPV6, ids=lambda r: f"{r[2]}->{r[0]}")
def test_hash_over_addresses_matches_the_table(row):
    dst, dport, src, sport, ip_only, _with_ports = row
    assert toeplitz(hash_input(dst, dport, src, sport, ports=False)) == ip_only


@pytest.mark.parametrize("row", IPV4 + IPV6, ids=lambda r: f"{r[2]}->{r[0]}")
def test_hash_over_addresses_and_ports_matches_the_table(row):
    dst, dport, src, sport, _ip_only, with_ports = row
    assert toeplitz(hash_input(dst, dport, src, sport, ports=True)) == with_ports


def test_a_zero_key_hashes_everything_to_zero():
    data = hash_input(*IPV6[0][:4], ports=True)
    assert int(lib.vnic_test_toeplitz(bytes(40), ffi.from_buffer(data), len(data))) == 0
