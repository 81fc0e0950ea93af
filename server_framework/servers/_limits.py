"""Per-peer limits: connections per client IP (or prefix) and a datagram rate per IP.

Sans-IO and loop-agnostic: nothing here reads a clock, a socket or a logger. The listeners
(asyncio, uvloop, trio) pass the peer address they limit -- the PROXY protocol's source when the
proxy is trusted, else the socket's peer -- and, for datagrams, the loop's monotonic time. Not
thread-safe: a limiter belongs to one event loop (several listeners of that loop may share it).

Keys. A peer is limited under :func:`peer_key`: its IPv4 address grouped by a prefix length (32 by
default: one address), or its IPv6 address grouped by another (64 by default: one host usually
owns a whole /64, so limiting single IPv6 addresses limits nothing). An IPv4-mapped IPv6 address
(a dual-stack socket's ``::ffff:192.0.2.1``) counts as its IPv4 address. Unix socket peers and
unknown addresses have no key and are never limited. Keys are cached by host text in a bounded
dict (:data:`KEY_CACHE_SIZE` entries, cleared when full), shared by every limiter with the same
prefixes: reconnecting peers cost one dict lookup, not an address parse.

Hot paths. :meth:`ConnectionsPerPeer.acquire` costs a cached key lookup and one dict update per
connection (about 0.2 us, and :meth:`~ConnectionsPerPeer.release` about 0.1 us);
:meth:`DatagramRatePerPeer.allow` a cached key lookup, one dict ``pop`` and one dict store per
datagram (about 0.2 us; the bucket is one float, see the class). A key cache miss parses the
address: about 3 us (IPv4) or 6 us (IPv6).

Bounds: every table a peer can grow has one.

- Key cache: at most :data:`KEY_CACHE_SIZE` entries per prefixes pair (cleared when full), and
  at most :data:`_MAX_KEY_CACHES` pairs (the pairs come from the configuration, not from peers).
- Connections: a key is in the table only while it has open connections, so the table holds at
  most as many keys as there are open connections (which the server's ``max_connections``
  bounds); the keys being refused are a subset of the table.
- Datagram rates: at most ``max_peers`` buckets. Making room first drops the buckets that are
  full by now (a full bucket is exactly a fresh one: dropping it loses nothing), then the least
  recently seen. The keys being limited are a subset of the table.

Refusals are counted (``refused`` on each limiter, plus the per-key count of the current
episode), and each limiter reports *transitions* through an optional callback, so the server can
log one line when a key starts being refused and one when it is allowed again, not one per
refusal::

    def on_transition(key: str, limited: bool, refused: int) -> None: ...

``on_transition(key, True, 1)`` is called on the first refusal of a key since it was last allowed
again; ``on_transition(key, False, n)`` when that episode ends, ``n`` being the number of
refusals during it. Per key, calls alternate, a start first. The callback runs after the
limiter's state is updated (an exception it raises propagates to the caller but corrupts
nothing); it must not call back into the limiter.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "DEFAULT_PREFIXES",
    "KEY_CACHE_SIZE",
    "REFUSED",
    "ConnectionsPerPeer",
    "DatagramRatePerPeer",
    "PeerAddress",
    "TransitionCallback",
    "check_prefixes",
    "peer_key",
]

#: What a listener has for a peer: ``(host, port)`` or ``(host, port, flowinfo, scope_id)`` with
#: a textual IP host, a Unix socket path (``str`` or ``bytes``), or None / ``""`` when unknown.
PeerAddress: TypeAlias = "tuple[Any, ...] | str | bytes | None"
#: ``on_transition(key, limited, refused)``: see the module docstring.
TransitionCallback: TypeAlias = Callable[[str, bool, int], None]

#: Default grouping: IPv4 peers one address each (/32), IPv6 peers one /64 each.
DEFAULT_PREFIXES: Final = (32, 64)
#: Entries of each key cache (host text -> key); the cache is cleared when full.
KEY_CACHE_SIZE: Final = 4096
#: What :meth:`ConnectionsPerPeer.acquire` returns for a refused connection. Test it with
#: ``token is REFUSED`` (a token may be None, which is falsy too).
REFUSED: Final = False

# Distinct prefixes pairs with a key cache; past it the caches are dropped and rebuilt.
_MAX_KEY_CACHES: Final = 64
_IPV4_ALL: Final = (1 << 32) - 1
_IPV6_ALL: Final = (1 << 128) - 1
_IPV4_MAPPED: Final = 0xFFFF  # the upper 96 bits of ::ffff:a.b.c.d


def check_prefixes(value: Any, name: str = "prefixes") -> tuple[int, int]:
    """Check a ``(ipv4_prefix, ipv6_prefix)`` pair and return it as a tuple of two ints.

    Args:
        value: Two prefix lengths: IPv4 peers are grouped by the first (0 to 32; 32 limits each
            address on its own, 24 a whole /24), IPv6 peers by the second (0 to 128).
        name: The option's name, for the error message.

    Raises:
        ValueError: not a pair of integers (``bool`` refused), or a length out of its range.
    """
    if isinstance(value, str | bytes) or not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(
            f"{name} must be a pair of prefix lengths (ipv4, ipv6) such as (32, 64), got {value!r}"
        )
    v4, v6 = value
    for prefix, family, most in ((v4, "IPv4", 32), (v6, "IPv6", 128)):
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= most:
            raise ValueError(
                f"{name}: the {family} prefix length must be an integer from 0 to {most}, "
                f"got {prefix!r} in {value!r}"
            )
    return (int(v4), int(v6))


class _KeyCache:
    """Computes and caches the keys of peers for one pair of prefix lengths."""

    __slots__ = ("_cache", "_v4", "_v4_mask", "_v6", "_v6_mask")

    def __init__(self, v4: int, v6: int) -> None:
        self._v4 = v4
        self._v6 = v6
        self._v4_mask = _IPV4_ALL ^ (_IPV4_ALL >> v4)
        self._v6_mask = _IPV6_ALL ^ (_IPV6_ALL >> v6)
        self._cache: dict[str, str | None] = {}

    def key(self, address: PeerAddress) -> str | None:
        """The key of ``address`` (see :func:`peer_key`)."""
        if not isinstance(address, tuple):
            return None  # a Unix socket path, or unknown
        try:
            return self._cache[address[0]]
        except (KeyError, IndexError, TypeError):  # free when nothing is raised
            return self._miss(address)

    def _miss(self, address: tuple[Any, ...]) -> str | None:
        host = address[0] if address else None
        if not isinstance(host, str):
            return None
        key = self._compute(host)
        cache = self._cache
        if len(cache) >= KEY_CACHE_SIZE:
            cache.clear()
        cache[host] = key
        return key

    def _compute(self, host: str) -> str | None:
        try:
            if ":" in host:  # what ip_address() would try second, after a failed IPv4 parse
                ip6 = ipaddress.IPv6Address(host)
            else:
                number = int(ipaddress.IPv4Address(host))
                ip6 = None
        except ValueError:
            return None  # not an IP address: unknown
        if ip6 is not None:
            number = int(ip6)
            if number >> 32 != _IPV4_MAPPED:
                prefix = self._v6
                text = _ipv6_text(number & self._v6_mask)
                if ip6.scope_id:
                    text = f"{text}%{ip6.scope_id}"
                return text if prefix == 128 else f"{text}/{prefix}"  # the form ip_network() parses
            number &= _IPV4_ALL  # an IPv4-mapped address counts as its IPv4 address
        prefix = self._v4
        text = _ipv4_text(number & self._v4_mask)
        return text if prefix == 32 else f"{text}/{prefix}"


def _ipv4_text(number: int) -> str:
    """``str(IPv4Address(number))``, 10 times faster."""
    return f"{number >> 24}.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


def _ipv6_text(number: int) -> str:
    """``str(IPv6Address(number))``, 5 times faster: the longest run of two or more zero groups
    (the first one on a tie) becomes ``::`` (RFC 5952)."""
    high = number >> 64  # two machine-sized halves: cheaper to shift than the 128-bit number
    low = number & 0xFFFF_FFFF_FFFF_FFFF
    text = ":%x:%x:%x:%x:%x:%x:%x:%x:" % (  # noqa: UP031 (faster than an f-string here)
        high >> 48,
        high >> 32 & 0xFFFF,
        high >> 16 & 0xFFFF,
        high & 0xFFFF,
        low >> 48,
        low >> 32 & 0xFFFF,
        low >> 16 & 0xFFFF,
        low & 0xFFFF,
    )
    if ":0:0:" in text:
        for run in _ZERO_RUNS:  # the longest first; find() gives the first one
            start = text.find(run)
            if start >= 0:
                return f"{text[1:start]}::{text[start + len(run) : -1]}"
    return text[1:-1]


# ":0:0:...:0:" for 8 down to 2 zero groups, as they appear in _ipv6_text's colon-framed text.
_ZERO_RUNS: Final = tuple(":" + "0:" * length for length in range(8, 1, -1))


_DEFAULT_KEYS: Final = _KeyCache(*DEFAULT_PREFIXES)
_key_caches: dict[tuple[int, int], _KeyCache] = {DEFAULT_PREFIXES: _DEFAULT_KEYS}


def _key_cache(prefixes: Any) -> _KeyCache:
    """The key cache shared by everything limiting under ``prefixes`` (checked)."""
    if prefixes is DEFAULT_PREFIXES:
        return _DEFAULT_KEYS
    if (
        type(prefixes) is tuple
        and len(prefixes) == 2
        and type(prefixes[0]) is int
        and type(prefixes[1]) is int
    ):  # (32.0, 64) or (True, 64) would find (32, 64) or (1, 64): they must not pass unchecked
        cache = _key_caches.get(prefixes)
        if cache is not None:  # only checked pairs are there
            return cache
    checked = check_prefixes(prefixes)
    cache = _key_caches.get(checked)
    if cache is None:
        if len(_key_caches) >= _MAX_KEY_CACHES:
            _key_caches.clear()  # limiters keep theirs; new ones get fresh caches
            _key_caches[DEFAULT_PREFIXES] = _DEFAULT_KEYS
        cache = _key_caches[checked] = _KeyCache(*checked)
    return cache


def peer_key(address: PeerAddress, prefixes: tuple[int, int] = DEFAULT_PREFIXES) -> str | None:
    """The key a peer is limited under, or None if it is not limited.

    Args:
        address: The peer, as servers have it: a ``(host, port)`` or ``(host, port, flowinfo,
            scope_id)`` tuple with a textual IP host; a ``str`` or ``bytes`` (a Unix socket
            path: None, Unix peers are not limited); None or ``""`` (unknown: None). A tuple
            whose host is not an IP address is unknown too.
        prefixes: IPv4 peers are grouped by the first prefix length, IPv6 peers by the second
            (see :func:`check_prefixes`). An IPv4-mapped IPv6 address counts as IPv4.

    Returns:
        The bare address for a full-length prefix (``"10.0.0.1"``, ``"2001:db8::1"``,
        ``"fe80::1%eth0"``), else the network with its prefix (``"10.0.0.0/24"``,
        ``"2001:db8:1:2::/64"``, ``"fe80::%eth0/64"``: a scoped address keeps its scope, since
        the same link-local address on two links is two peers).

    Raises:
        ValueError: bad ``prefixes``.

    Results are cached by host text (:data:`KEY_CACHE_SIZE` entries per prefixes pair).
    """
    return _key_cache(prefixes).key(address)


def _check_callback(on_transition: Any) -> TransitionCallback | None:
    if on_transition is not None and not callable(on_transition):
        raise TypeError(f"on_transition must be callable or None, got {on_transition!r}")
    return on_transition  # type: ignore[no-any-return]


class ConnectionsPerPeer:
    """At most ``limit`` open connections per peer key.

    The listener does, for each accepted connection (``peer`` being the PROXY protocol's source
    when the proxy is trusted, else the socket's peer)::

        token = limits.acquire(peer)
        if token is REFUSED:
            ...  # count it, close the connection
        else:
            try:
                ...  # serve it
            finally:
                limits.release(token)  # exactly once

    Unix peers and unknown addresses are never refused (their token is None, and
    ``release(None)`` does nothing). A key is removed when its count drops to 0, so the table
    holds at most as many keys as there are open connections.

    Transitions (see the module docstring): a key starts being refused on its first refusal
    since it was last allowed again; the episode ends when its count falls to ``resume_at``
    or below (half the limit by default). The gap is hysteresis: a client that keeps a pool at
    the limit and keeps asking for more gets one pair of log lines, not a pair per reconnection.
    Pass ``resume_at=limit - 1`` to end episodes as soon as the key is under its limit.

    Args:
        limit: Connections allowed per key (>= 1).
        prefixes: How peers are grouped, see :func:`peer_key`.
        on_transition: Called on each transition, or None.
        resume_at: The count at or below which a refused key's episode ends (0 to
            ``limit - 1``; default ``limit // 2``).

    Raises:
        ValueError: a bad limit, prefixes or resume_at.
        TypeError: on_transition is not callable.
    """

    __slots__ = ("_counts", "_key", "_on_transition", "_refusing", "limit", "refused", "resume_at")

    def __init__(
        self,
        limit: int,
        prefixes: tuple[int, int] = DEFAULT_PREFIXES,
        *,
        on_transition: TransitionCallback | None = None,
        resume_at: int | None = None,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"the connection limit per peer must be an integer >= 1, got {limit!r}"
            )
        if resume_at is None:
            resume_at = limit // 2
        elif isinstance(resume_at, bool) or not isinstance(resume_at, int):
            raise ValueError(f"resume_at must be an integer, got {resume_at!r}")
        if not 0 <= resume_at < limit:
            raise ValueError(
                f"resume_at must be from 0 to limit - 1 ({limit - 1}), got {resume_at}"
            )
        #: Connections allowed per key.
        self.limit: Final = limit
        #: A refused key's episode ends when its count falls to this or below.
        self.resume_at: Final = resume_at
        #: Connections refused so far, in all.
        self.refused = 0
        self._key = _key_cache(prefixes).key
        self._on_transition = _check_callback(on_transition)
        self._counts: dict[str, int] = {}  # key -> open connections (> 0)
        self._refusing: dict[str, int] = {}  # key -> refusals in its episode (a subset of _counts)

    def acquire(self, address: PeerAddress) -> str | Literal[False] | None:
        """Count a new connection from ``address``, or refuse it.

        Returns:
            :data:`REFUSED` if the peer's key is at its limit (nothing counted but the
            refusal); else the token to pass to :meth:`release` when the connection ends: the
            key, or None for a peer that is not limited.
        """
        key = self._key(address)
        if key is None:
            return None
        counts = self._counts
        count = counts.get(key, 0)
        if count < self.limit:
            counts[key] = count + 1
            return key
        self.refused += 1
        refusing = self._refusing
        refused = refusing.get(key, 0) + 1
        refusing[key] = refused
        if refused == 1 and self._on_transition is not None:
            self._on_transition(key, True, 1)
        return REFUSED

    def release(self, token: str | Literal[False] | None) -> None:
        """Uncount a connection that :meth:`acquire` accepted with ``token``.

        ``None`` and :data:`REFUSED` do nothing (so a ``finally`` can always call it), nor does
        an unknown key or a key whose connections were all released already: a count never goes
        negative. (A second release of a key that still has other connections cannot be told
        apart from theirs: release each token exactly once.)
        """
        if not token:
            return
        counts = self._counts
        count = counts.get(token)
        if count is None:
            return
        count -= 1
        if count:
            counts[token] = count
        else:
            del counts[token]
        if count <= self.resume_at and self._refusing:
            refused = self._refusing.pop(token, 0)
            if refused and self._on_transition is not None:
                self._on_transition(token, False, refused)

    def count(self, key: str) -> int:
        """Open connections counted under ``key`` (0 if none)."""
        return self._counts.get(key, 0)

    def refusals(self, key: str) -> int:
        """Refusals of ``key`` in its current episode (0 if it is not being refused)."""
        return self._refusing.get(key, 0)

    def refusing(self) -> list[str]:
        """The keys being refused: refused at least once since they were last allowed again."""
        return list(self._refusing)

    def __len__(self) -> int:
        """Keys with open connections."""
        return len(self._counts)

    def __repr__(self) -> str:
        return (
            f"<ConnectionsPerPeer limit={self.limit} keys={len(self._counts)} "
            f"refusing={len(self._refusing)} refused={self.refused}>"
        )


class DatagramRatePerPeer:
    """A token bucket per peer key: ``rate`` datagrams per second, bursts of ``burst``.

    The listener does, for each datagram received (``now`` being the loop's monotonic time)::

        if not limits.allow(peer, now):
            ...  # count it, drop the datagram

    Unix peers and unknown addresses are always allowed.

    A bucket is one float per key: the time at which it will be full again (the "theoretical
    arrival time" of the generic cell rate algorithm, equivalent to a token bucket). A datagram
    is allowed if the bucket holds a whole token, that is if ``full_at - now <= (burst - 1) /
    rate``; it then takes the token (``full_at = max(full_at, now) + 1 / rate``). A bucket with
    ``full_at <= now`` is full: exactly what a new peer gets, so forgetting it loses nothing.

    The table holds at most ``max_peers`` buckets, in least-recently-seen order (each datagram
    moves its key to the end: a dict ``pop`` and store, which the update needs anyway). When a
    new key finds it full, every full bucket is dropped; if that does not leave an eighth of the
    table free, the least recently seen buckets are dropped until it does. Making room scans the
    table, so it is done for at least ``max_peers // 8`` new keys at a time: O(1) per datagram,
    amortized, even under a flood of new (spoofed) source addresses, which then evicts the
    peers seen longest ago, never the active ones.

    Transitions (see the module docstring): a key starts being limited on its first refused
    datagram since it was last allowed again; the episode ends when its bucket is full again
    (seen by :meth:`allow` or :meth:`expire`), or when the bucket is dropped to make room.

    Args:
        rate: Datagrams per second allowed per key, on average (> 0).
        burst: The bucket's size: datagrams a quiet peer may send at once (>= 1; default
            ``max(1, rate)``, one second's worth).
        prefixes: How peers are grouped, see :func:`peer_key`.
        max_peers: Buckets kept at most (>= 1).
        on_transition: Called on each transition, or None.

    Raises:
        ValueError: a bad rate, burst, prefixes or max_peers.
        TypeError: on_transition is not callable.
    """

    __slots__ = (
        "_full_at",
        "_interval",
        "_key",
        "_limited",
        "_on_transition",
        "_slack",
        "burst",
        "max_peers",
        "rate",
        "refused",
    )

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        prefixes: tuple[int, int] = DEFAULT_PREFIXES,
        max_peers: int = 65536,
        *,
        on_transition: TransitionCallback | None = None,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise ValueError(f"the datagram rate per peer must be a finite number, got {rate!r}")
        if not rate > 0:
            raise ValueError(f"the datagram rate per peer must be > 0, got {rate!r}")
        if burst is None:
            burst = max(1.0, float(rate))
        elif (
            isinstance(burst, bool)
            or not isinstance(burst, int | float)
            or not math.isfinite(burst)
            or not burst >= 1
        ):
            raise ValueError(
                f"the datagram burst per peer must be a finite number >= 1, got {burst!r}"
            )
        if isinstance(max_peers, bool) or not isinstance(max_peers, int) or max_peers < 1:
            raise ValueError(f"max_peers must be an integer >= 1, got {max_peers!r}")
        #: Datagrams per second allowed per key.
        self.rate: Final = float(rate)
        #: The bucket's size.
        self.burst: Final = float(burst)
        #: Buckets kept at most.
        self.max_peers: Final = max_peers
        #: Datagrams refused so far, in all.
        self.refused = 0
        self._interval = 1.0 / self.rate  # what one datagram costs, in seconds of refill
        self._slack = (self.burst - 1.0) / self.rate  # how far full_at may run ahead of now
        self._key = _key_cache(prefixes).key
        self._on_transition = _check_callback(on_transition)
        self._full_at: dict[str, float] = {}  # key -> time its bucket is full again; LRU order
        self._limited: dict[str, int] = {}  # key -> refusals in its episode (a subset of _full_at)

    def allow(self, address: PeerAddress, now: float) -> bool:
        """Take a token from the bucket of ``address``'s key: True if the datagram may pass.

        Args:
            address: The datagram's source.
            now: The loop's monotonic time, in seconds (never earlier than a previous call's).
        """
        key = self._key(address)
        if key is None:
            return True
        table = self._full_at
        full_at = table.pop(key, None)
        if full_at is None:
            if len(table) >= self.max_peers:
                self._make_room(now)
            full_at = now
        if full_at <= now:  # a full bucket
            table[key] = now + self._interval
            if self._limited:
                refused = self._limited.pop(key, 0)
                if refused and self._on_transition is not None:
                    self._on_transition(key, False, refused)
            return True
        if full_at - now <= self._slack:
            table[key] = full_at + self._interval
            return True
        table[key] = full_at  # seen: the end of the LRU order
        self.refused += 1
        limited = self._limited
        refused = limited.get(key, 0) + 1
        limited[key] = refused
        if refused == 1 and self._on_transition is not None:
            self._on_transition(key, True, 1)
        return False

    def expire(self, now: float) -> int:
        """Drop every bucket that is full by ``now``; return how many were dropped.

        They are exactly fresh buckets, so nothing changes for their peers, but the table
        shrinks and the episodes of limited keys that went quiet end (their transition is
        reported now rather than at their next datagram). O(table size): call it now and then
        (every few seconds), not per datagram.
        """
        table = self._full_at
        full = [key for key, full_at in table.items() if full_at <= now]
        for key in full:
            del table[key]
        self._forget(full)
        return len(full)

    def _make_room(self, now: float) -> None:
        """Make room for at least ``max_peers // 8`` (and 1) new keys: full buckets first, then
        the least recently seen."""
        self.expire(now)
        table = self._full_at
        excess = len(table) - (self.max_peers - max(1, self.max_peers // 8))
        if excess <= 0:
            return
        oldest: list[str] = []
        for key in table:  # least recently seen first
            oldest.append(key)
            if len(oldest) == excess:
                break
        for key in oldest:
            del table[key]
        self._forget(oldest)

    def _forget(self, keys: list[str]) -> None:
        """End the episodes of the dropped ``keys`` that were being limited."""
        limited = self._limited
        if not limited:
            return
        for key in keys:
            refused = limited.pop(key, 0)
            if refused and self._on_transition is not None:
                self._on_transition(key, False, refused)

    def tokens(self, key: str, now: float) -> float:
        """The tokens in the bucket of ``key`` at ``now`` (``burst`` if it has no bucket)."""
        full_at = self._full_at.get(key)
        if full_at is None or full_at <= now:
            return self.burst
        return self.burst - (full_at - now) * self.rate

    def refusals(self, key: str) -> int:
        """Refused datagrams of ``key`` in its current episode (0 if it is not limited)."""
        return self._limited.get(key, 0)

    def limited(self) -> list[str]:
        """The keys being limited: refused at least once since they were last allowed again."""
        return list(self._limited)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has a bucket."""
        return key in self._full_at

    def __len__(self) -> int:
        """Buckets in the table."""
        return len(self._full_at)

    def __repr__(self) -> str:
        return (
            f"<DatagramRatePerPeer rate={self.rate} burst={self.burst} keys={len(self._full_at)} "
            f"limited={len(self._limited)} refused={self.refused}>"
        )
