"""Who the client is, when proxies stand in between.

``X-Forwarded-For`` is believed only from a peer in ``TRUSTED_PROXIES``. Each
proxy appends the address it saw, so the chain is read from the right: trusted
hops are skipped and the first address that is not trusted is the client.
Anything left of it was written by the client itself and is ignored, so a
forged header buys nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddressResolver:
    """Resolves the client address of a request; free when no proxy is trusted."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in trusted_proxies
        )
        # Requests come from a handful of proxies: remember the verdicts.
        self._verdict = lru_cache(maxsize=4096)(self._judge)

    @property
    def enabled(self) -> bool:
        return bool(self._networks)

    def _judge(self, address: str) -> bool | None:
        """``True`` for a trusted proxy, ``False`` for another address, ``None`` for
        something that is not an IP address at all."""
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def resolve(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client behind ``peer``, given the ``X-Forwarded-For`` header values
        in the order they arrived."""
        if peer is None or not forwarded_for or not self._verdict(peer):
            return peer
        client = peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            verdict = self._verdict(hop)
            if verdict is None:
                break  # garbage: keep the last address a trusted hop vouched for
            client = hop
            if not verdict:
                break
        return client
