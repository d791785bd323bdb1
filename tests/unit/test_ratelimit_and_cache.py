from __future__ import annotations

import asyncio

from adapters.memory import FakeClock, InMemoryCache, InMemoryRateLimiter


async def test_limit_admits_exactly_the_limit_then_refuses_until_the_window_ends() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    decisions = [await limiter.hit("ip:1", limit=3, window_seconds=60) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert decisions[3].retry_after == 60
    clock.advance(seconds=45)
    refused = await limiter.hit("ip:1", limit=3, window_seconds=60)
    assert not refused.allowed
    assert refused.retry_after == 15
    clock.advance(seconds=15)
    assert (await limiter.hit("ip:1", limit=3, window_seconds=60)).allowed


async def test_keys_are_counted_apart_and_concurrent_hits_are_exact() -> None:
    limiter = InMemoryRateLimiter(clock=FakeClock())
    decisions = await asyncio.gather(
        *(limiter.hit("a", limit=10, window_seconds=60) for _ in range(100))
    )
    assert sum(d.allowed for d in decisions) == 10
    assert (await limiter.hit("b", limit=10, window_seconds=60)).allowed
    stats = await limiter.stats()
    assert (stats.total_identifiers, stats.total_requests) == (2, 11)


async def test_limiter_statistics_forget_expired_windows() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    await limiter.hit("a", limit=5, window_seconds=10)
    clock.advance(seconds=11)
    stats = await limiter.stats()
    assert (stats.total_identifiers, stats.total_requests) == (0, 0)


async def test_cache_values_live_for_their_ttl() -> None:
    clock = FakeClock()
    cache = InMemoryCache(clock=clock)
    await cache.set("k", b"v", ttl_seconds=10)
    assert await cache.get("k") == b"v"
    clock.advance(seconds=5)
    await cache.set("other", b"w", ttl_seconds=1)
    clock.advance(seconds=2)
    stats = await cache.stats()
    assert (stats.total_keys, stats.expired_keys) == (2, 1)
    assert await cache.get("other") is None
    clock.advance(seconds=4)
    assert await cache.get("k") is None
    await cache.set("x", b"1", ttl_seconds=60)
    await cache.delete("x")
    assert await cache.get("x") is None


async def test_cache_stays_within_its_bound() -> None:
    cache = InMemoryCache(clock=FakeClock(), max_keys=3)
    for i in range(5):
        await cache.set(f"k{i}", b"v", ttl_seconds=60)
    assert (await cache.stats()).total_keys == 3
    assert await cache.get("k4") == b"v"
    assert await cache.get("k0") is None
