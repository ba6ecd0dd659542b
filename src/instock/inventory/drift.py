"""Checking stock against its sources, one SKU's levels at a time, from a checkpoint: pure.

A level must equal the fold of its ledger, its chain must verify, and its `reserved` and
`committed` buckets must equal what the reservations hold. The fold starts from the state last
verified (a checkpoint), so a check costs the entries written since, not the SKU's history.
A ledger edited in place invalidates checkpoints: then the fold starts from the beginning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from instock.inventory.model import (
    Buckets,
    LedgerEntry,
    LedgerFold,
    Lot,
    StockLevel,
)

Key = tuple[str, str]  # (sku, location)


class DriftKind:
    LEVEL = "level_mismatch"  # the stored level is not the fold of its ledger
    LEDGER = "ledger_altered"  # an entry's content or the chain no longer verifies
    RESERVED = "reserved_mismatch"  # `reserved` is not what active reservations hold
    COMMITTED = "committed_mismatch"  # `committed` is not what committed reservations hold


@dataclass(frozen=True)
class Finding:
    kind: str
    sku: str
    location: str
    expected: dict[str, Any]
    actual: dict[str, Any]
    detail: str


@dataclass
class Checked:
    """What a check found, and the states it verified (the next checkpoints)."""

    findings: list[Finding] = field(default_factory=list)
    verified: dict[Key, dict[str, Any]] = field(default_factory=dict)
    entries: int = 0  # ledger entries folded: the check's cost


def state_of(level: StockLevel, accepted: Iterable[int] = ()) -> dict[str, Any]:
    """A level as a checkpoint keeps it (JSON), with ledger versions a person accepted as
    altered (approved repairs of an edited ledger)."""
    return {"version": level.version, "hash": level.last_hash,
            "buckets": level.buckets.as_dict(),
            "lots": {code: {"expires_on": lot.expires_on.isoformat(),
                            "buckets": lot.buckets.as_dict()}
                     for code, lot in sorted(level.lots.items())},
            "accepted": sorted(set(accepted))}


def level_of(sku: str, location: str, state: Mapping[str, Any]) -> StockLevel:
    return StockLevel(sku, location, Buckets(**state["buckets"]), int(state["version"]),
                      str(state["hash"]),
                      {code: Lot(code, date.fromisoformat(lot["expires_on"]),
                                 Buckets(**lot["buckets"]))
                       for code, lot in state["lots"].items()})


def check(stored: Mapping[Key, StockLevel], checkpoints: Mapping[Key, Mapping[str, Any]],
          entries: Iterable[LedgerEntry], holds: Mapping[Key, tuple[int, int]],
          from_start: set[Key]) -> Checked:
    """Compare each stored level with its ledger folded from its checkpoint (from the start
    for `from_start` keys and keys without one), and its holds with the reservations'.

    `entries` are those after each key's checkpoint version (all of a `from_start` key's), in
    (sku, location, version) order; `holds` are (reserved, committed) by key.
    """
    found = Checked()
    accepted: dict[Key, set[int]] = {}
    folder = LedgerFold()
    for key, state in checkpoints.items():
        accepted[key] = set(state.get("accepted", ()))
        if key not in from_start and "buckets" in state:
            folder.levels[key] = level_of(*key, state)
    problems_by_key: dict[Key, list[str]] = {}
    altered: dict[Key, list[int]] = {}
    for entry in entries:
        before = len(folder.problems)
        folder.add(entry)
        key = (entry.sku, entry.location)
        fresh = folder.problems[before:]
        if fresh and entry.version not in accepted.get(key, set()):
            problems_by_key.setdefault(key, []).extend(fresh)
            altered.setdefault(key, []).append(entry.version)
    found.entries = folder.entries
    for key in sorted(stored.keys() | folder.levels.keys() | holds.keys()):
        have = stored.get(key)
        want = folder.levels.get(key) or StockLevel(*key)
        broken = problems_by_key.get(key)
        if broken:
            found.findings.append(Finding(
                DriftKind.LEDGER, *key, {"hash_chain": "verifies"},
                {"hash_chain": "broken", "versions": altered[key], "problems": broken[:5]},
                "; ".join(broken[:3])))
        level = have or StockLevel(*key)
        # An edited ledger folds to something else than the level by its nature: that is the
        # one drift to report (its repair compensates the edit), not a level mismatch as well.
        if not broken and _differs(level, want):
            found.findings.append(Finding(
                DriftKind.LEVEL, *key, _shown(want), _shown(level),
                f"{key[0]}@{key[1]}: the stored level is not the fold of its ledger"))
        reserved, committed = holds.get(key, (0, 0))
        if level.buckets.reserved != reserved:
            found.findings.append(Finding(
                DriftKind.RESERVED, *key, {"reserved": reserved},
                {"reserved": level.buckets.reserved},
                f"{key[0]}@{key[1]}: reserved {level.buckets.reserved}, active reservations "
                f"hold {reserved}"))
        if level.buckets.committed != committed:
            found.findings.append(Finding(
                DriftKind.COMMITTED, *key, {"committed": committed},
                {"committed": level.buckets.committed},
                f"{key[0]}@{key[1]}: committed {level.buckets.committed}, committed "
                f"reservations hold {committed}"))
        if not broken and not _differs(level, want):
            found.verified[key] = state_of(want, accepted.get(key, ()))
    return found


def _differs(have: StockLevel, want: StockLevel) -> bool:
    if have.buckets != want.buckets:
        return True
    if (have.version, have.last_hash) != (want.version, want.last_hash) and (
            have.version or want.version):
        return True
    return ({c: (lot.expires_on, lot.buckets) for c, lot in have.lots.items()}
            != {c: (lot.expires_on, lot.buckets) for c, lot in want.lots.items()})


def _shown(level: StockLevel) -> dict[str, Any]:
    return {**level.buckets.as_dict(), "version": level.version}


def from_start(state: Mapping[str, Any]) -> bool:
    """A checkpoint that holds no state (reset after a repair of an edited ledger): the next
    check folds the level's whole ledger, with the versions it accepts."""
    return "buckets" not in state


def repair_target(kind: str, stored: StockLevel, folded: StockLevel,
                  holds: tuple[int, int]) -> Buckets:
    """The buckets a repair leaves the level and its ledger at. The repair sets the level to
    its ledger's fold and records one entry moving both from there to this target:
    - a level that drifted from its intact ledger goes back to the ledger (an entry of zero);
    - an edited ledger is compensated back to what the level, written with the original
      history, says;
    - `reserved`/`committed` go to what the reservations hold."""
    if kind == DriftKind.LEDGER:
        return stored.buckets
    reserved, committed = holds
    if kind == DriftKind.RESERVED:
        return replace(folded.buckets, reserved=reserved)
    if kind == DriftKind.COMMITTED:
        return replace(folded.buckets, committed=committed)
    return folded.buckets
