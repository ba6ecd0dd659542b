"""Read copies: served while current, dropped by a newer version heard, never stored over one."""

from __future__ import annotations

import time

from instock.platform.readcache import VersionedCache


def test_a_copy_is_served_until_a_newer_version_is_heard() -> None:
    cache: VersionedCache[str] = VersionedCache(ttl_seconds=60)
    cache.put("sku-1", "at 3", 3, key="web")
    cache.put("sku-1", "at 3, any channel", 3)
    assert cache.get("sku-1", "web") == "at 3"
    assert cache.get("sku-1") == "at 3, any channel"
    cache.heard("sku-1", 3)  # the change it was read at: still current
    assert cache.get("sku-1", "web") == "at 3"
    cache.heard("sku-1", 4)
    assert cache.get("sku-1", "web") is None and cache.get("sku-1") is None
    cache.put("sku-1", "at 4", 4, key="web")
    assert cache.get("sku-1", "web") == "at 4"


def test_a_read_that_raced_a_change_cannot_store_its_older_copy() -> None:
    cache: VersionedCache[str] = VersionedCache(ttl_seconds=60)
    cache.heard("sku-1", 7)  # heard before the slow read (begun at version 6) came back
    cache.put("sku-1", "at 6", 6)
    assert cache.get("sku-1") is None
    cache.put("sku-1", "at 7", 7)
    cache.put("sku-1", "at 6 again", 6)  # an older copy never replaces a newer one
    assert cache.get("sku-1") == "at 7"


def test_other_entities_are_untouched_and_a_copy_lives_at_most_its_ttl() -> None:
    cache: VersionedCache[str] = VersionedCache(ttl_seconds=0.05)
    cache.put("a", "a1", 1)
    cache.put("b", "b1", 1)
    cache.heard("a", 2)
    assert cache.get("a") is None and cache.get("b") == "b1"
    time.sleep(0.06)
    assert cache.get("b") is None  # no event came: the copy expired anyway


def test_a_ttl_of_zero_keeps_nothing() -> None:
    cache: VersionedCache[str] = VersionedCache(ttl_seconds=0)
    cache.put("a", "a1", 1)
    assert cache.get("a") is None


def test_forget_clear_and_the_bound_on_entities() -> None:
    cache: VersionedCache[int] = VersionedCache(ttl_seconds=60, max_groups=2)
    for n, group in enumerate(("a", "b", "c")):
        cache.put(group, n, 1)
    assert cache.get("a") is None  # the least recently touched went first
    assert cache.get("b") == 1 and cache.get("c") == 2
    cache.forget(["b"])
    assert cache.get("b") is None and cache.get("c") == 2
    cache.clear()
    assert cache.get("c") is None
