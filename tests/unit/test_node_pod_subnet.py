"""The pod subnet of the real node (playground/node.py): never one this machine already routes."""

from __future__ import annotations

import ipaddress

import pytest

from playground.node import free_pod_subnet

# What `ip -j route` and `ip -j addr` print, trimmed to the fields read.
HOST_ROUTES = [{"dst": "default", "gateway": "192.0.2.1"}, {"dst": "192.0.2.0/24"}]
HOST_ADDRESSES = [{"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                                                 {"family": "inet6", "local": "::1", "prefixlen": 128}]}]


def test_the_first_free_slash_24_of_the_pod_range_is_chosen():
    assert free_pod_subnet(HOST_ROUTES, HOST_ADDRESSES) == ipaddress.ip_network("10.213.0.0/24")


def test_a_routed_subnet_is_skipped():
    routes = [*HOST_ROUTES, {"dst": "10.213.0.0/24", "dev": "mo-other"}]
    assert free_pod_subnet(routes, HOST_ADDRESSES) == ipaddress.ip_network("10.213.1.0/24")


def test_a_wider_route_or_an_address_covering_the_range_skips_what_it_covers():
    routes = [*HOST_ROUTES, {"dst": "10.213.0.0/23"}]
    addresses = [*HOST_ADDRESSES, {"ifname": "x", "addr_info": [{"family": "inet", "local": "10.213.2.9", "prefixlen": 24}]}]
    assert free_pod_subnet(routes, addresses) == ipaddress.ip_network("10.213.3.0/24")


def test_a_machine_routing_the_whole_range_gets_a_clear_error():
    with pytest.raises(RuntimeError, match="no free /24 in 10.213.0.0/16"):
        free_pod_subnet([{"dst": "10.0.0.0/8"}], HOST_ADDRESSES)
