"""From the bus to `instock recs stream`: behaviour events written as CSV files in a directory.

The `recs-stream-files` consumer (on when INSTOCK_RECS_STREAM_DIR is set) writes each
transaction's item events as one file of the `csv` log format, the sequence named as a refit
names it (the customer when known, else the session), so the Spark stream counts what a
retrain on the stored events would. A file appears whole: it is written under a hidden name,
which Spark's file source skips, then renamed.

At least once: a transaction that fails after its file was written writes the events again.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.bus import Envelope
from instock.platform.bus.consumer import ConsumerSpec, gathered
from instock.platform.ids import new_id
from instock.recommendations.engine import KINDS, subject_of
from instock.recommendations.events import BehaviourRecorded
from instock.recommendations.logs import STREAM_COLUMNS

NAME = "recs-stream-files"
_ROWS = "recs.stream_files"


def _is_item_event(envelope: Envelope) -> bool:
    data = envelope["data"]
    return data["kind"] in KINDS and bool(data.get("product_id"))


def _row(data: dict[str, Any]) -> tuple[str, str, str, str]:
    subject = subject_of(data.get("customer_id"), data.get("session_id"))
    return subject, str(data["product_id"]), str(data["occurred_at"]), str(data["kind"])


def behaviour_files(folder: Path) -> ConsumerSpec:
    """The consumer writing behaviour events into `folder` for `recs stream --source`."""

    async def gather(conn: AsyncConnection, envelope: Envelope) -> None:
        rows: list[tuple[str, str, str, str]] = gathered(_ROWS, list)
        rows.append(_row(envelope["data"]))

    async def write(conn: AsyncConnection) -> None:
        rows: list[tuple[str, str, str, str]] = gathered(_ROWS, list)
        if not rows:
            return
        folder.mkdir(parents=True, exist_ok=True)
        name = f"behaviour-{new_id()}.csv"  # time-ordered ids: files sort as they came
        hidden = folder / f".{name}"
        with hidden.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(STREAM_COLUMNS)
            writer.writerows(rows)
        os.replace(hidden, folder / name)

    # every event counts, whatever order its shopper's events arrive in
    return ConsumerSpec(NAME, frozenset({BehaviourRecorded.type}), gather, ordered=False,
                        wants=_is_item_event, finish=write)
