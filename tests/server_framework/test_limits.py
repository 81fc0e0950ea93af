"""Per-peer limits (`server_framework.servers._limits`): keys, connections per peer, datagram
rates per peer. Sans-IO: no sockets, no clock (times are passed explicitly)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_framework.servers import _limits
from server_framework.servers._limits import (
    DEFAULT_PREFIXES,
    KEY_CACHE_SIZE,
    REFUSED,
    ConnectionsPerPeer,
    DatagramRatePerPeer,
    check_prefixes,
    peer_key,
)

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Transitions:
    """An ``on_transition`` callback that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, int]] = []

    def __call__(self, key: str, limited: bool, refused: int) -> None:
        self.calls.append((key, limited, refused))

    def take(self) -> list[tuple[str, bool, int]]:
        calls, self.calls = self.calls, []
        return calls


def v4(number: int) -> tuple[str, int]:
    return (str(ipaddress.IPv4Address(number)), 40000)


# --- peer_key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "prefixes", "expected"),
    [
        (("192.0.2.7", 5000), (32, 64), "192.0.2.7"),
        (("192.0.2.7", 5000), (24, 48), "192.0.2.0/24"),
        (("192.0.2.7", 5000), (16, 48), "192.0.0.0/16"),
        (("192.0.2.7", 5000), (0, 0), "0.0.0.0/0"),
        (("0.0.0.0", 0), (32, 64), "0.0.0.0"),
        (("255.255.255.255", 0), (31, 64), "255.255.255.254/31"),
        (("2001:db8:1:2:3:4:5:6", 5000, 0, 0), (32, 64), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:3:4:5:6", 5000, 0, 0), (24, 48), "2001:db8:1::/48"),
        (("2001:db8:1:2:3:4:5:6", 5000, 0, 0), (32, 128), "2001:db8:1:2:3:4:5:6"),
        (("2001:db8::1", 5000), (32, 128), "2001:db8::1"),
        (("2001:db8::1", 5000), (32, 64), "2001:db8::/64"),
        (("2001:DB8:0:0:1:0:0:1", 5000), (32, 128), "2001:db8::1:0:0:1"),  # canonical text
        (("::1", 5000, 0, 0), (32, 128), "::1"),
        (("::1", 5000, 0, 0), (32, 64), "::/64"),
        (("::", 5000, 0, 0), (32, 128), "::"),
        (("::ffff:192.0.2.7", 5000, 0, 0), (32, 64), "192.0.2.7"),  # IPv4-mapped: IPv4
        (("::ffff:192.0.2.7", 5000, 0, 0), (24, 48), "192.0.2.0/24"),
        (("::FFFF:C000:0207", 5000, 0, 0), (32, 64), "192.0.2.7"),
        (("fe80::1%eth0", 5000, 0, 2), (32, 64), "fe80::%eth0/64"),  # scoped: keeps the scope
        (("fe80::1%eth0", 5000, 0, 2), (32, 128), "fe80::1%eth0"),
        (("fe80::1%2", 5000, 0, 2), (32, 128), "fe80::1%2"),
    ],
)
def test_peer_key(address: tuple[Any, ...], prefixes: tuple[int, int], expected: str) -> None:
    assert peer_key(address, prefixes) == expected
    assert peer_key(address, prefixes) == expected  # cached: the same answer
    if "/" in expected:
        assert ipaddress.ip_network(expected)  # a network's key is a parseable network


def test_peer_key_defaults_to_one_ipv4_address_and_one_ipv6_64() -> None:
    assert DEFAULT_PREFIXES == (32, 64)
    assert peer_key(("10.0.0.1", 1)) == "10.0.0.1"
    assert peer_key(("10.0.0.2", 1)) == "10.0.0.2"
    assert peer_key(("2001:db8:1:2::1", 1)) == peer_key(("2001:db8:1:2:ffff::9", 2))
    assert peer_key(("2001:db8:1:2::1", 1)) != peer_key(("2001:db8:1:3::1", 1))


def test_peer_key_groups_by_prefix() -> None:
    assert peer_key(("10.0.0.1", 1), (24, 48)) == peer_key(("10.0.0.254", 9), (24, 48))
    assert peer_key(("10.0.0.1", 1), (24, 48)) != peer_key(("10.0.1.1", 1), (24, 48))
    assert peer_key(("2001:db8:1:ffff::1", 1), (24, 48)) == "2001:db8:1::/48"


def test_peer_key_scoped_addresses_on_two_links_are_two_peers() -> None:
    assert peer_key(("fe80::1%eth0", 1, 0, 2)) != peer_key(("fe80::1%eth1", 1, 0, 3))


@pytest.mark.parametrize(
    "address",
    [
        "/run/app.sock",  # a Unix socket path
        "",  # an unnamed Unix socket
        b"\0abstract",  # a Linux abstract Unix socket name
        b"",
        None,
        (),
        ("", 0),
        ("example.com", 80),  # not an IP address: unknown
        ("10.0.0.256", 80),
        ("010.0.0.1", 80),  # leading zeros: ambiguous, refused by ipaddress
        ("1.2.3.4%eth0", 80),
        ("fe80::1%", 80),
        (None, 0),
        (b"10.0.0.1", 0),
        ([1, 2], 0),  # unhashable: no crash
        (1234, 0),
    ],
)
def test_peer_key_of_unlimited_peers_is_none(address: Any) -> None:
    assert peer_key(address) is None
    assert peer_key(address, (24, 48)) is None
    assert peer_key(address) is None  # cached or not, the same


def test_peer_key_a_string_is_never_an_ip_address() -> None:
    assert peer_key("10.0.0.1") is None  # a Unix socket named like an address
    assert peer_key(("10.0.0.1", 1)) == "10.0.0.1"
    assert peer_key("1") is None


def test_peer_key_cache_is_bounded() -> None:
    cache = _limits._key_cache((31, 63))._cache
    for number in range(KEY_CACHE_SIZE * 2 + 10):
        peer_key(v4(number), (31, 63))
        assert len(cache) <= KEY_CACHE_SIZE
    assert peer_key(v4(3), (31, 63)) == "0.0.0.2/31"  # recomputed after a clear
    assert cache  # still caching


def test_key_caches_are_bounded_and_shared() -> None:
    assert _limits._key_cache((30, 60)) is _limits._key_cache([30, 60])
    assert _limits._key_cache(DEFAULT_PREFIXES) is _limits._key_cache((32, 64))
    for v6 in range(129):
        _limits._key_cache((1, v6))
        assert len(_limits._key_caches) <= _limits._MAX_KEY_CACHES
    assert _limits._key_caches[DEFAULT_PREFIXES] is _limits._DEFAULT_KEYS
    assert peer_key(("10.0.0.1", 1)) == "10.0.0.1"


@pytest.mark.parametrize(
    "bad",
    [
        (33, 64),
        (-1, 64),
        (32, 129),
        (32, -1),
        (32,),
        (32, 64, 0),
        (),
        "32,64",
        b"\x20\x40",
        32,
        None,
        (32.0, 64),
        (32, 64.0),
        (True, 64),
        ("32", 64),
        (None, 64),
    ],
)
def test_bad_prefixes_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="prefix"):
        check_prefixes(bad)
    with pytest.raises(ValueError, match="prefix"):
        peer_key(("10.0.0.1", 1), bad)
    with pytest.raises(ValueError, match="prefix"):
        ConnectionsPerPeer(1, bad)
    with pytest.raises(ValueError, match="prefix"):
        DatagramRatePerPeer(1.0, prefixes=bad)


def test_bad_prefixes_do_not_pass_as_equal_good_ones() -> None:
    """(32.0, 64) == (32, 64) and (True, 64) == (1, 64): the cache lookup must not let them in."""
    peer_key(("10.0.0.1", 1), (32, 64))
    peer_key(("10.0.0.1", 1), (1, 64))
    for bad in ((32.0, 64), (True, 64), (1, 64.0)):
        with pytest.raises(ValueError, match="prefix"):
            peer_key(("10.0.0.1", 1), bad)  # type: ignore[arg-type]


def test_check_prefixes() -> None:
    assert check_prefixes((24, 48)) == (24, 48)
    assert check_prefixes([0, 128]) == (0, 128)
    assert type(check_prefixes([32, 64])) is tuple
    with pytest.raises(ValueError, match=r"^limit_prefixes: the IPv6 prefix length .* 129"):
        check_prefixes((32, 129), "limit_prefixes")
    with pytest.raises(ValueError, match=r"^limit_prefixes must be a pair"):
        check_prefixes("24", "limit_prefixes")


def test_ipv6_text_matches_ipaddress_on_edge_cases() -> None:
    for number in (
        0,
        1,
        (1 << 128) - 1,
        0xFFFF << 32,
        0x0001_0000_0000_0001_0000_0000_0000_0001,  # two runs of 2 and 3 zero groups
        0x0001_0000_0000_0001_0001_0000_0000_0001,  # a tie: the first run
        0x0001_0000_0001_0000_0001_0000_0001_0000,  # single zero groups stay "0"
        0x2001_0DB8 << 96,
        0x0000_0000_0000_0000_0000_0000_0001_0000,
    ):
        assert _limits._ipv6_text(number) == str(ipaddress.IPv6Address(number)), hex(number)


SPARSE_IPV6 = st.lists(
    st.sampled_from([0, 0, 0, 1, 0x10, 0xFFFF]) | st.integers(0, 0xFFFF), min_size=8, max_size=8
).map(lambda groups: sum(group << (16 * index) for index, group in enumerate(groups)))


@PROPERTY_SETTINGS
@given(SPARSE_IPV6 | st.integers(0, (1 << 128) - 1), st.integers(0, 128))
def test_ipv6_keys_match_ipaddress(number: int, prefix: int) -> None:
    address = ipaddress.IPv6Address(number)
    key = peer_key((str(address), 1, 0, 0), (32, prefix))
    if address.ipv4_mapped is not None:
        assert key == str(address.ipv4_mapped)
    elif prefix == 128:
        assert key == str(address)
    else:
        assert key == str(ipaddress.IPv6Network((number, prefix), strict=False))
    assert peer_key((address.exploded, 1, 0, 0), (32, prefix)) == key  # whatever the text


@PROPERTY_SETTINGS
@given(st.integers(0, (1 << 32) - 1), st.integers(0, 32))
def test_ipv4_keys_match_ipaddress(number: int, prefix: int) -> None:
    address = ipaddress.IPv4Address(number)
    expected = (
        str(address) if prefix == 32 else str(ipaddress.IPv4Network((number, prefix), strict=False))
    )
    assert peer_key((str(address), 1), (prefix, 64)) == expected
    assert peer_key((f"::ffff:{address}", 1, 0, 0), (prefix, 64)) == expected  # mapped


# --- ConnectionsPerPeer -------------------------------------------------------------------


def test_connections_up_to_the_limit() -> None:
    limits = ConnectionsPerPeer(2)
    peer = ("192.0.2.7", 1000)
    first = limits.acquire(peer)
    second = limits.acquire(("192.0.2.7", 1001))  # the port does not matter
    assert first == second == "192.0.2.7"
    assert limits.count("192.0.2.7") == 2
    assert limits.acquire(("192.0.2.7", 1002)) is REFUSED
    assert limits.count("192.0.2.7") == 2  # a refusal is not counted as a connection
    assert limits.refused == 1
    assert limits.acquire(("192.0.2.8", 1000)) == "192.0.2.8"  # another peer, its own limit
    limits.release(first)
    assert limits.count("192.0.2.7") == 1
    assert limits.acquire(peer) == "192.0.2.7"
    assert limits.acquire(peer) is REFUSED
    assert limits.refused == 2


def test_connections_grouped_by_prefix() -> None:
    limits = ConnectionsPerPeer(2, (24, 48))
    assert limits.acquire(("10.0.0.1", 1)) == "10.0.0.0/24"
    assert limits.acquire(("::ffff:10.0.0.2", 1, 0, 0)) == "10.0.0.0/24"
    assert limits.acquire(("10.0.0.3", 1)) is REFUSED
    assert limits.acquire(("10.0.1.3", 1)) == "10.0.1.0/24"
    assert limits.acquire(("2001:db8:1:2::1", 1)) == "2001:db8:1::/48"
    assert limits.acquire(("2001:db8:1:3::1", 1)) == "2001:db8:1::/48"
    assert limits.acquire(("2001:db8:1:4::1", 1)) is REFUSED


@pytest.mark.parametrize("address", ["/run/app.sock", "", b"\0name", None, ("example.com", 1)])
def test_connections_of_unlimited_peers_are_never_refused(address: Any) -> None:
    limits = ConnectionsPerPeer(1)
    for _ in range(5):
        assert limits.acquire(address) is None
    assert len(limits) == 0
    limits.release(None)  # a no-op
    assert len(limits) == 0
    assert limits.refused == 0


def test_connection_keys_are_removed_at_zero() -> None:
    limits = ConnectionsPerPeer(3)
    tokens = [limits.acquire(v4(number)) for number in range(100)]
    assert len(limits) == 100
    for token in tokens:
        limits.release(token)
    assert len(limits) == 0
    assert limits._counts == {}


def test_connection_release_never_goes_negative() -> None:
    limits = ConnectionsPerPeer(2)
    token = limits.acquire(("10.0.0.1", 1))
    limits.release(token)
    limits.release(token)  # twice: ignored
    assert limits.count("10.0.0.1") == 0
    assert len(limits) == 0
    limits.release("10.9.9.9")  # unknown: ignored
    limits.release(REFUSED)  # what a refused acquire returned: ignored
    limits.release(None)
    assert len(limits) == 0
    assert limits.acquire(("10.0.0.1", 1)) == "10.0.0.1"
    assert limits.acquire(("10.0.0.1", 1)) == "10.0.0.1"
    assert limits.acquire(("10.0.0.1", 1)) is REFUSED  # the limit still holds after all that


def test_connection_refusal_transitions() -> None:
    transitions = Transitions()
    limits = ConnectionsPerPeer(4, on_transition=transitions)
    assert limits.resume_at == 2  # half the limit by default
    tokens = [limits.acquire(("10.0.0.1", port)) for port in range(4)]
    assert transitions.take() == []
    assert limits.refusing() == []
    assert limits.acquire(("10.0.0.1", 9)) is REFUSED
    assert transitions.take() == [("10.0.0.1", True, 1)]  # started being refused
    assert limits.acquire(("10.0.0.1", 9)) is REFUSED
    assert limits.acquire(("10.0.0.1", 9)) is REFUSED
    assert transitions.take() == []  # an ongoing refusal: nothing
    assert limits.refusals("10.0.0.1") == 3
    assert limits.refusing() == ["10.0.0.1"]
    limits.release(tokens.pop())  # 3 open: under the limit, not yet at resume_at
    assert transitions.take() == []
    tokens.append(limits.acquire(("10.0.0.1", 9)))  # 4 again
    assert tokens[-1] == "10.0.0.1"
    assert limits.acquire(("10.0.0.1", 9)) is REFUSED  # the same episode: still nothing
    assert transitions.take() == []
    assert limits.refusals("10.0.0.1") == 4
    limits.release(tokens.pop())
    limits.release(tokens.pop())  # 2 open: the episode ends
    assert transitions.take() == [("10.0.0.1", False, 4)]
    assert limits.refusing() == []
    assert limits.refusals("10.0.0.1") == 0
    limits.release(tokens.pop())
    limits.release(tokens.pop())
    assert transitions.take() == []
    assert tokens == []
    assert len(limits) == 0
    assert limits.refused == 4


def test_connection_transitions_with_resume_at_just_under_the_limit() -> None:
    transitions = Transitions()
    limits = ConnectionsPerPeer(2, on_transition=transitions, resume_at=1)
    a = limits.acquire(("10.0.0.1", 1))
    limits.acquire(("10.0.0.1", 2))
    assert limits.acquire(("10.0.0.1", 3)) is REFUSED
    limits.release(a)
    assert transitions.take() == [("10.0.0.1", True, 1), ("10.0.0.1", False, 1)]


def test_connection_transitions_with_limit_one() -> None:
    transitions = Transitions()
    limits = ConnectionsPerPeer(1, on_transition=transitions)
    assert limits.resume_at == 0
    token = limits.acquire(("10.0.0.1", 1))
    assert limits.acquire(("10.0.0.1", 2)) is REFUSED
    assert limits.acquire(("10.0.0.2", 1)) == "10.0.0.2"
    assert transitions.take() == [("10.0.0.1", True, 1)]
    limits.release(token)
    assert transitions.take() == [("10.0.0.1", False, 1)]
    limits.release(token)  # a double release reports nothing
    assert transitions.take() == []


def test_connection_callback_error_leaves_a_consistent_state() -> None:
    def boom(key: str, limited: bool, refused: int) -> None:
        raise RuntimeError(key)

    limits = ConnectionsPerPeer(1, on_transition=boom)
    token = limits.acquire(("10.0.0.1", 1))
    with pytest.raises(RuntimeError):
        limits.acquire(("10.0.0.1", 1))
    assert limits.refused == 1
    assert limits.refusals("10.0.0.1") == 1
    with pytest.raises(RuntimeError):
        limits.release(token)
    assert len(limits) == 0
    assert limits.refusing() == []


@pytest.mark.parametrize(
    ("limit", "resume_at"),
    [(0, None), (-1, None), (True, None), (1.5, None), ("2", None), (2, 2), (2, -1), (2, 1.0)],
)
def test_connection_bad_arguments(limit: Any, resume_at: Any) -> None:
    with pytest.raises(ValueError, match=r"limit|resume_at"):
        ConnectionsPerPeer(limit, resume_at=resume_at)


def test_connection_callback_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_transition"):
        ConnectionsPerPeer(1, on_transition="log")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_transition"):
        DatagramRatePerPeer(1.0, on_transition=1)  # type: ignore[arg-type]


def test_connection_repr() -> None:
    limits = ConnectionsPerPeer(1)
    limits.acquire(("10.0.0.1", 1))
    limits.acquire(("10.0.0.1", 1))
    assert repr(limits) == "<ConnectionsPerPeer limit=1 keys=1 refusing=1 refused=1>"


CONNECTION_OPS = st.lists(
    st.tuples(st.sampled_from(["acquire", "release", "release_again", "junk"]), st.integers(0, 7)),
    max_size=200,
)


@PROPERTY_SETTINGS
@given(st.integers(1, 4), st.data(), CONNECTION_OPS)
def test_connection_counts_match_a_model(limit: int, data: st.DataObject, ops: Any) -> None:
    transitions = Transitions()
    resume_at = data.draw(st.integers(0, limit - 1))
    limits = ConnectionsPerPeer(limit, (30, 64), on_transition=transitions, resume_at=resume_at)
    held: list[str | None] = []  # tokens of open connections
    released: list[str] = []
    refusing: set[str] = set()
    refused = 0
    for op, number in ops:
        if op == "acquire":
            address: Any = v4(number) if number < 7 else "/run/app.sock"
            key = peer_key(address, (30, 64))
            token = limits.acquire(address)
            if key is not None and held.count(key) >= limit:
                assert token is REFUSED
                refused += 1
                refusing.add(key)
            else:
                assert token == key
                held.append(token)
        elif op == "release" and held:
            token = held.pop(number % len(held))
            limits.release(token)
            if token is not None:
                released.append(token)
                if held.count(token) <= resume_at:
                    refusing.discard(token)
        elif op == "release_again" and released:
            token = released[number % len(released)]
            if token not in held:  # can only be told apart when none is open any more
                limits.release(token)
        elif op == "junk":
            limits.release(f"192.0.2.{number}")
        counts = {key: held.count(key) for key in held if key is not None}
        assert limits._counts == counts  # never negative, never zero, never over the limit
        assert all(0 < count <= limit for count in limits._counts.values())
        assert len(limits) == len(counts)
        assert set(limits.refusing()) == refusing
        assert set(limits.refusing()) <= set(limits._counts)  # bounded by the table
        assert limits.refused == refused
    # Transitions alternate per key, starting with a start.
    state: dict[str, bool] = {}
    for key, limited, count in transitions.calls:
        assert state.get(key, False) is not limited
        state[key] = limited
        assert count >= 1
    assert {key for key, limited in state.items() if limited} == refusing


# --- DatagramRatePerPeer ------------------------------------------------------------------

PEER = ("192.0.2.7", 5000)


def test_rate_default_burst() -> None:
    assert DatagramRatePerPeer(10).burst == 10.0
    assert DatagramRatePerPeer(0.5).burst == 1.0
    assert DatagramRatePerPeer(0.5, 3).burst == 3.0
    assert DatagramRatePerPeer(10).max_peers == 65536


def test_rate_burst_then_refill() -> None:
    limits = DatagramRatePerPeer(4.0, 4.0)
    assert [limits.allow(PEER, 0.0) for _ in range(5)] == [True] * 4 + [False]
    assert limits.tokens("192.0.2.7", 0.0) == 0.0
    assert not limits.allow(PEER, 0.2499)  # a token is 0.25 s away
    assert limits.allow(PEER, 0.25)  # exactly one token
    assert not limits.allow(PEER, 0.25)
    assert limits.tokens("192.0.2.7", 0.75) == 2.0
    assert [limits.allow(PEER, 0.75) for _ in range(3)] == [True, True, False]
    assert limits.refused == 4


def test_rate_refill_stops_at_burst() -> None:
    limits = DatagramRatePerPeer(2.0, 3.0)
    assert limits.allow(PEER, 0.0)
    assert limits.tokens("192.0.2.7", 1000.0) == 3.0
    assert [limits.allow(PEER, 1000.0) for _ in range(4)] == [True, True, True, False]


def test_rate_refused_datagrams_cost_nothing() -> None:
    limits = DatagramRatePerPeer(1.0, 1.0)
    assert limits.allow(PEER, 0.0)
    for step in range(1, 100):
        assert not limits.allow(PEER, step / 100)
    assert limits.allow(PEER, 1.0)  # on time, whatever was refused meanwhile


def test_rate_fractional_burst() -> None:
    limits = DatagramRatePerPeer(1.0, 2.5)
    assert [limits.allow(PEER, 0.0) for _ in range(3)] == [True, True, False]  # 2.5 - 2 = 0.5
    assert limits.tokens("192.0.2.7", 0.0) == 0.5
    assert not limits.allow(PEER, 0.4999)
    assert limits.allow(PEER, 0.5)  # 1.0 token: exactly enough
    assert not limits.allow(PEER, 0.5)


def test_rate_burst_one_spaces_datagrams() -> None:
    limits = DatagramRatePerPeer(2.0, 1.0)
    assert limits.allow(PEER, 10.0)
    assert not limits.allow(PEER, 10.0)
    assert not limits.allow(PEER, 10.4999)
    assert limits.allow(PEER, 10.5)
    assert limits.allow(PEER, 11.0)
    assert limits.allow(PEER, 12.5)  # a pause earns no more than the burst
    assert not limits.allow(PEER, 12.5)


def test_rate_per_key() -> None:
    limits = DatagramRatePerPeer(1.0, 1.0, (24, 64))
    assert limits.allow(("10.0.0.1", 1), 0.0)
    assert not limits.allow(("10.0.0.2", 1), 0.0)  # the same /24
    assert not limits.allow(("::ffff:10.0.0.3", 1, 0, 0), 0.0)
    assert limits.allow(("10.0.1.1", 1), 0.0)
    assert limits.allow(("2001:db8::1", 1), 0.0)
    assert not limits.allow(("2001:db8::2", 1), 0.0)  # the same /64
    assert "10.0.0.0/24" in limits
    assert len(limits) == 3


@pytest.mark.parametrize("address", ["/run/app.sock", "", b"\0name", None, ("example.com", 1)])
def test_rate_unlimited_peers_always_allowed(address: Any) -> None:
    limits = DatagramRatePerPeer(1.0, 1.0, max_peers=1)
    assert all(limits.allow(address, 0.0) for _ in range(100))
    assert len(limits) == 0
    assert limits.refused == 0


def test_rate_table_stays_bounded() -> None:
    limits = DatagramRatePerPeer(1.0, max_peers=1000)
    for number in range(100_000):
        assert limits.allow(v4(number), number / 1_000_000)
        assert len(limits) <= 1000
    assert len(limits) > 800  # room is made an eighth at a time, not all at once
    assert v4(99_999)[0] in limits  # the newest are kept


def test_rate_making_room_drops_full_buckets_first() -> None:
    limits = DatagramRatePerPeer(1.0, 2.0, max_peers=10)
    quiet = [f"10.0.0.{number}" for number in range(5)]
    busy = [f"10.0.1.{number}" for number in range(5)]
    for host in quiet:  # seen first: the least recently seen
        assert limits.allow((host, 1), 0.0)  # full again at 1.0
    for host in busy:
        assert limits.allow((host, 1), 0.0)
        assert limits.allow((host, 1), 0.0)  # empty, full again at 2.0
    assert len(limits) == 10
    assert limits.allow(("10.0.2.1", 1), 1.5)  # a new key: the full buckets go
    assert len(limits) == 6
    assert all(host not in limits for host in quiet)
    assert all(host in limits for host in busy)
    assert limits.tokens(busy[0], 1.5) == 1.5  # state kept
    assert [limits.allow((busy[0], 1), 1.5), limits.allow((busy[0], 1), 1.5)] == [True, False]


def test_rate_making_room_drops_least_recently_seen() -> None:
    limits = DatagramRatePerPeer(1.0, 1.0, max_peers=16)  # an eighth: room for 2
    hosts = [f"10.0.0.{number}" for number in range(16)]
    for host in hosts:
        assert limits.allow((host, 1), 0.0)
    assert not limits.allow((hosts[0], 1), 0.5)  # seen again (refused): now the most recent
    assert not limits.allow((hosts[1], 1), 0.5)
    assert limits.allow(("10.0.1.1", 1), 0.5)  # no bucket is full: the least recently seen go
    assert len(limits) == 15
    assert hosts[2] not in limits
    assert hosts[3] not in limits
    assert all(host in limits for host in hosts[:2] + hosts[4:])
    assert not limits.allow((hosts[0], 1), 0.5)  # still limited: its state was kept


def test_rate_max_peers_one() -> None:
    limits = DatagramRatePerPeer(1.0, 1.0, max_peers=1)
    assert limits.allow(("10.0.0.1", 1), 0.0)
    assert limits.allow(("10.0.0.2", 1), 0.0)
    assert len(limits) == 1
    assert "10.0.0.2" in limits


def test_rate_transitions() -> None:
    transitions = Transitions()
    limits = DatagramRatePerPeer(1.0, 2.0, on_transition=transitions)
    assert limits.allow(PEER, 0.0)
    assert limits.allow(PEER, 0.0)
    assert transitions.take() == []
    assert not limits.allow(PEER, 0.0)
    assert transitions.take() == [("192.0.2.7", True, 1)]  # started being limited
    assert not limits.allow(PEER, 0.5)
    assert transitions.take() == []  # ongoing
    assert limits.limited() == ["192.0.2.7"]
    assert limits.refusals("192.0.2.7") == 2
    assert limits.allow(PEER, 1.0)  # allowed, but the bucket is not full: the same episode
    assert not limits.allow(PEER, 1.0)
    assert transitions.take() == []
    assert limits.refusals("192.0.2.7") == 3
    assert limits.allow(PEER, 3.0)  # full again at 3.0: the episode ends
    assert transitions.take() == [("192.0.2.7", False, 3)]
    assert limits.limited() == []
    assert limits.refused == 3


def test_rate_expire_ends_quiet_episodes() -> None:
    transitions = Transitions()
    limits = DatagramRatePerPeer(1.0, 1.0, on_transition=transitions)
    assert limits.allow(PEER, 0.0)
    assert not limits.allow(PEER, 0.0)
    assert limits.allow(("10.0.0.1", 1), 0.5)
    transitions.take()
    assert limits.expire(0.9) == 0
    assert limits.expire(1.0) == 1  # full at 1.0 exactly
    assert transitions.take() == [("192.0.2.7", False, 1)]
    assert PEER[0] not in limits
    assert limits.expire(1.5) == 1
    assert transitions.take() == []  # that one was never limited
    assert len(limits) == 0


def test_rate_eviction_ends_episodes() -> None:
    transitions = Transitions()
    limits = DatagramRatePerPeer(1.0, 1.0, max_peers=1, on_transition=transitions)
    assert limits.allow(PEER, 0.0)
    assert not limits.allow(PEER, 0.0)
    assert limits.allow(("10.0.0.1", 1), 0.0)  # makes room: the limited key goes
    assert transitions.take() == [("192.0.2.7", True, 1), ("192.0.2.7", False, 1)]
    assert limits.limited() == []


@pytest.mark.parametrize(
    ("rate", "burst", "max_peers"),
    [
        (0, None, 1),
        (-1, None, 1),
        (float("nan"), None, 1),
        (float("inf"), None, 1),
        (True, None, 1),
        ("1", None, 1),
        (1, 0.5, 1),
        (1, 0, 1),
        (1, float("nan"), 1),
        (1, float("inf"), 1),
        (1, True, 1),
        (1, None, 0),
        (1, None, 1.5),
        (1, None, True),
    ],
)
def test_rate_bad_arguments(rate: Any, burst: Any, max_peers: Any) -> None:
    with pytest.raises(ValueError, match=r"rate|burst|max_peers"):
        DatagramRatePerPeer(rate, burst, max_peers=max_peers)


def test_rate_repr() -> None:
    limits = DatagramRatePerPeer(2, 1)
    limits.allow(PEER, 0.0)
    limits.allow(PEER, 0.0)
    assert repr(limits) == "<DatagramRatePerPeer rate=2.0 burst=1.0 keys=1 limited=1 refused=1>"


class ModelBucket:
    """A plain token bucket: what DatagramRatePerPeer must agree with (exact with dyadic times)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@PROPERTY_SETTINGS
@given(
    st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    st.sampled_from([1.0, 1.5, 2.0, 4.0, 8.0]),
    st.lists(st.integers(0, 8), min_size=1, max_size=100),  # steps of 1/8 s: exact floats
)
def test_rate_matches_a_token_bucket(rate: float, burst: float, steps: list[int]) -> None:
    limits = DatagramRatePerPeer(rate, burst)
    model = ModelBucket(rate, burst, 0.0)
    now = 0.0
    for step in steps:
        now += step / 8
        assert limits.allow(PEER, now) is model.allow(now)
        assert limits.tokens(PEER[0], now) == model.tokens


@PROPERTY_SETTINGS
@given(
    st.integers(1, 8),
    st.lists(st.tuples(st.integers(0, 11), st.integers(0, 4)), max_size=300),
)
def test_rate_table_bounded_and_transitions_paired(max_peers: int, ops: Any) -> None:
    transitions = Transitions()
    limits = DatagramRatePerPeer(1.0, 2.0, max_peers=max_peers, on_transition=transitions)
    now = 0.0
    refused = 0
    for number, step in ops:
        now += step / 4
        if number == 11:
            limits.expire(now)
        elif not limits.allow(v4(number), now):
            refused += 1
        assert len(limits) <= max_peers
        assert set(limits.limited()) <= set(limits._full_at)  # bounded by the table
        assert limits.refused == refused
    state: dict[str, bool] = {}
    for key, limited, count in transitions.calls:
        assert state.get(key, False) is not limited
        state[key] = limited
        assert count >= 1
    assert {key for key, limited in state.items() if limited} == set(limits.limited())
    assert (
        sum(count for _, limited, count in transitions.calls if not limited)
        + sum(limits.refusals(key) for key in limits.limited())
        == refused
    )
