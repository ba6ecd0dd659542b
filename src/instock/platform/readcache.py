"""Read models this process keeps in memory, each at the version it was read at, and kept fresh
by the event stream: a change heard drops every copy older than it.

A drop's product page is asked for hundreds of times a second and changes a few times a second;
reading it from the database each time costs most of a page's CPU. Here a page is read once per
change instead. How fresh a copy is:
- changes committed by this process are heard at commit (`Database.on_commit`), before the
  writer's response is sent, so this process reads its own writes;
- other processes' changes are heard from the bus, as soon as a live subscriber hears them;
- a copy lives at most `ttl` seconds, which bounds staleness if an event is lost.

A read that races a change cannot store an old copy over it: a group remembers the newest
version heard, and `put` refuses anything older.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class _Group(Generic[V]):
    newest: int  # the newest version put or heard
    copies: dict[Hashable, tuple[V, int, float]] = field(default_factory=dict)


class VersionedCache(Generic[V]):
    """Copies grouped by the entity whose version they were read at (a SKU, a product); one
    entity may have several copies (its stock per channel)."""

    def __init__(self, ttl_seconds: float, max_groups: int = 100_000) -> None:
        self.ttl = ttl_seconds
        self.max_groups = max_groups
        self._groups: OrderedDict[str, _Group[V]] = OrderedDict()

    def get(self, group: str, key: Hashable = None) -> V | None:
        found = self._groups.get(group)
        if found is None:
            return None
        copy = found.copies.get(key)
        if copy is None or copy[1] < found.newest or time.monotonic() - copy[2] >= self.ttl:
            return None
        return copy[0]

    def put(self, group: str, value: V, version: int, key: Hashable = None) -> None:
        """Keep `value`, read at `version`, unless a newer version was heard meanwhile."""
        if self.ttl <= 0:
            return
        found = self._group(group, version)
        if version < found.newest:
            return
        found.newest = version
        found.copies[key] = (value, version, time.monotonic())

    def heard(self, group: str, version: int) -> None:
        """The entity is now at `version`: drop its older copies, refuse older ones later."""
        found = self._group(group, version)
        if version > found.newest:
            found.newest = version
            found.copies.clear()

    def forget(self, groups: Iterable[str]) -> None:
        for group in groups:
            self._groups.pop(group, None)

    def clear(self) -> None:
        """Drop every copy (a change that moves them all, such as a channel's locations)."""
        self._groups.clear()

    def _group(self, group: str, version: int) -> _Group[V]:
        found = self._groups.get(group)
        if found is None:
            found = self._groups[group] = _Group(version)
            if len(self._groups) > self.max_groups:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(group)
        return found
