"""`instock bench privacy`: what sealing personal data costs a profile read and a save.

A profile read opens the subject's wrapped data key (AES-GCM under the master key) and three
sealed fields (AES-GCM under the data key). The bench times, per profile: the full read through
the customers service, the same rows read without opening anything, and the cryptography
alone, so the share encryption takes of a read is measured, not guessed.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from instock.app import build
from instock.bench.drop.engine import settings_for
from instock.bench.local import Reporter, backend_of, scratch_database
from instock.customers import store as customers_store
from instock.customers.model import Changes
from instock.migrate import upgrade
from instock.privacy import store as privacy_store
from instock.privacy.model import Sealer

FIELDS = (("email_enc", "email"), ("phone_enc", "phone"), ("name_enc", "name"))


def _us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_us": round(statistics.median(ordered) * 1e6, 1),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1)}


async def _timed(ids: list[str], call: Callable[[str], Awaitable[Any]],
                 advance: Callable[[int], None]) -> list[float]:
    samples = []
    for customer_id in ids:
        start = time.perf_counter()
        await call(customer_id)
        samples.append(time.perf_counter() - start)
        advance(1)
    return samples


async def run(database: str, workdir: Path, profiles: int, rounds: int,
              reporter: Reporter) -> dict[str, Any]:
    async with scratch_database(database, workdir, "instock_bench_privacy") as url:
        await asyncio.to_thread(upgrade, url)
        c = build(settings_for(url, None))
        try:
            ids = [f"cus-{i:06d}" for i in range(profiles)]
            saves = await _timed(ids, lambda i: c.customers.save(i, Changes(
                email=f"{i}@example.com", phone="+33612345678", name=f"Customer {i}"),
                by="bench"), reporter.task(f"saving {profiles} profiles", profiles))

            async def rows_only(customer_id: str) -> None:
                async with c.db.read() as conn:
                    await customers_store.get(conn, customer_id)
                    await privacy_store.get(conn, customer_id)

            keys, records = {}, {}
            async with c.db.read() as conn:
                for customer_id in ids:
                    keys[customer_id] = await privacy_store.get(conn, customer_id)
                    records[customer_id] = await customers_store.get(conn, customer_id)

            async def crypto_only(customer_id: str) -> None:
                key, record = keys[customer_id], records[customer_id]
                assert key and key.kid and key.wrapped and record
                sealer = Sealer(customer_id, c.privacy.keyring.unwrap(
                    customer_id, key.kid, key.wrapped), c.privacy.keyring)
                for column, _ in FIELDS:
                    token = getattr(record, column)
                    sealer.decrypt("customers", column, token)

            reads, plain, crypto = [], [], []
            bar = reporter.task(f"reading them, {rounds} rounds", profiles * rounds * 3)
            for _ in range(rounds):  # interleaved, so a noisy moment hits all three
                reads += await _timed(ids, c.customers.get, bar)
                plain += await _timed(ids, rows_only, bar)
                crypto += await _timed(ids, crypto_only, bar)
        finally:
            await c.close()
    read, rows, opened = _us(reads), _us(plain), _us(crypto)
    return {"database": backend_of(database), "profiles": profiles, "rounds": rounds,
            "save": _us(saves), "read": read, "read_without_decryption": rows,
            "decryption": opened,
            "decryption_share_of_read": round(opened["p50_us"] / read["p50_us"], 3)}
