"""The C Toeplitz hash (native/toeplitz.c), both ways it is computed,
against the published RSS vectors: the input is source address,
destination address, then source and destination port, all in network
order.  The carry-less multiply way is also checked against the table way
on random keys and inputs."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.rss_vectors import IPV4, IPV6, KEY
from vnic._native import ffi, lib

WAYS = {"device": 0, "tables": 1}


@pytest.fixture(params=sorted(WAYS))
def toeplitz(request):
    def hash_with(data: bytes, key: bytes = KEY) -> int:
        return int(lib.vnic_test_toeplitz(key, ffi.from_buffer(data), len(data), WAYS[request.param]))
    return hash_with


def hash_input(dst: str, dport: int, src: str, sport: int, ports: bool) -> bytes:
    addrs = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    return addrs + (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") if ports else b"")


@pytest.mark.parametrize("row", IPV4 + IPV6, ids=lambda r: f"{r[2]}->{r[0]}")
def test_hash_over_addresses_matches_the_table(toeplitz, row):
    dst, dport, src, sport, ip_only, _with_ports = row
    assert toeplitz(hash_input(dst, dport, src, sport, ports=False)) == ip_only


@pytest.mark.parametrize("row", IPV4 + IPV6, ids=lambda r: f"{r[2]}->{r[0]}")
def test_hash_over_addresses_and_ports_matches_the_table(toeplitz, row):
    dst, dport, src, sport, _ip_only, with_ports = row
    assert toeplitz(hash_input(dst, dport, src, sport, ports=True)) == with_ports


def test_a_zero_key_hashes_everything_to_zero(toeplitz):
    data = hash_input(*IPV6[0][:4], ports=True)
    assert toeplitz(data, bytes(40)) == 0


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        return {w for line in f if line.startswith("flags") for w in line.split(":", 1)[1].split()}


def test_the_device_multiplies_where_the_cpu_can():
    can = {"pclmulqdq", "sse4_1"} <= cpu_flags()
    assert bool(lib.vnic_test_toeplitz_clmul()) == can


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=40, max_size=40), data=st.binary(max_size=36))
def test_both_ways_give_the_same_hash(key, data):
    way = {w: int(lib.vnic_test_toeplitz(key, ffi.from_buffer(data), len(data), n)) for w, n in WAYS.items()}
    assert way["device"] == way["tables"]
