"""`instock recs train --engine spark|local` and `instock recs stream --engine spark` (issue 23).

The same small log trained by both engines gives the same statistics and, served from either
artefact, the same top-20 lists; ALS (two libraries, randomised) agrees on what it recommends.
The stream, started from an artefact, counts new events as a refit on the whole log would.
Real Spark in local mode, one session for the module. Needs PySpark (`make spark`).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import sqlalchemy as sa
from typer.testing import CliRunner

from instock.app import Container
from instock.platform.bus.consumer import Consumer
from instock.platform.bus.outbox import outbox
from instock.recommendations import artefacts as files
from instock.recommendations.artefacts import Artefacts
from instock.recommendations.cli import SPARK_MISSING, recs_app
from instock.recommendations.data import Context
from instock.recommendations.engine import Snapshot, fit
from instock.recommendations.events import BehaviourRecorded
from instock.recommendations.latent import LatentFactors
from instock.recommendations.logs import STREAM_COLUMNS, RawEvents, read_csv_log
from instock.recommendations.scores import best
from instock.recommendations.stream_files import behaviour_files
from instock.recommendations.training import AlsSettings, stored_events, train_local
from tests.support import INSTOCK, instock_env

K = 20
CLUSTERS, PER_CLUSTER = 3, 25
HEADER = ["session_id", "user_id", "item_id", "timestamp", "event_type"]
KINDS = ["view", "view", "view", "add_to_cart", "wishlist", "purchase"]
# The JVM's quick compiler: these jobs are too short for the optimising one to pay off (and
# its frames are larger: ALS's deep lineage needs the bigger stack).
FAST_JVM = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -Xss16m"}
# ALS as the baseline configures it but smaller: 75 items need no 64 factors, and Spark's
# iterations are jobs of their own.
ALS = AlsSettings(factors=16, regularization=0.1, alpha=10.0, iterations=8, seed=0)


def synthetic_rows(seed: int, sessions: int, start: float) -> list[list[str]]:
    """Shoppers browsing mostly one of three clusters of items, with equal times in places (the
    file's order breaks those ties), user-only rows and a malformed row."""
    rng = np.random.default_rng(seed)
    rows: list[list[str]] = []
    for s in range(sessions):
        cluster = int(rng.integers(CLUSTERS))
        when = start + float(rng.integers(0, 86_400 * 5))
        for _ in range(int(rng.integers(3, 10))):
            home = cluster if rng.random() < 0.85 else int(rng.integers(CLUSTERS))
            item = home * PER_CLUSTER + int(rng.integers(PER_CLUSTER))
            when += float(rng.choice([0, 0, 30, 120, 600]))
            session, user = (f"s{seed}-{s}", "") if s % 7 else ("", f"u{s % 5}")
            rows.append([session, user, f"item-{item:03d}", f"{when:.0f}",
                         str(rng.choice(KINDS))])
    rows.append(["s-bad", "", "", "not a time", "view"])
    return rows


def write_log(path: Path, rows: list[list[str]], header: Sequence[str] = HEADER) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from instock.recommendations import spark as engine

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = engine.session("local[2]", conf=FAST_JVM)
    yield session
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    session.stop()
    # stop() ends the Spark context, not its JVM: left alone it idles on a core's share and a
    # gigabyte until pytest exits, slowing every test after this module.
    if gateway is not None:
        gateway.shutdown()
        process = getattr(gateway, "proc", None)
        if process is not None:
            process.terminate()
            process.wait(30)
        SparkContext._gateway = SparkContext._jvm = None


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    return synthetic_rows(seed=1, sessions=120, start=1_700_000_000)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory, history: list[list[str]]) -> Path:
    return write_log(tmp_path_factory.mktemp("log") / "log.csv", history)


@pytest.fixture(scope="module")
def trained(spark: Any, log: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Artefacts]:
    """Both engines' artefacts of the log, published and read back as serving reads them."""
    from instock.recommendations import spark as engine

    out = tmp_path_factory.mktemp("artefacts")
    made = {"local": train_local(read_csv_log(log), ALS),
            "spark": engine.train(spark, engine.parse_rows(engine.csv_rows(spark, log)), ALS)}
    return {name: files.load(files.publish(a, out / name)) for name, a in made.items()}


def assert_same_matrix(a: sp.csr_matrix, b: sp.csr_matrix, rtol: float = 0.0) -> None:
    assert a.shape == b.shape
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, rtol=rtol, atol=0)


def served_top(artefact: Artefacts, contexts: list[list[int]]) -> list[list[int]]:
    """Each context's top-K of the served hybrid, fitted as a refit fits it with the artefact."""
    n = artefact.n_items
    snapshot = Snapshot(artefact.code_of(), {}, sp.csr_matrix((n, 0)))
    hybrid, _ = fit(snapshot, [], trained=artefact)
    tops = []
    for items in contexts:
        blend = hybrid.blend(Context.of(items))
        tops.append(best(blend.items, blend.scores, K).tolist())
    return tops


def contexts_of(artefact: Artefacts, rows: list[list[str]], count: int) -> list[list[int]]:
    code = artefact.code_of()
    by_session: dict[str, list[int]] = {}
    for session, user, item, _, _ in rows:
        if item in code:
            by_session.setdefault(session or user, []).append(code[item])
    return [items[:3] for items in list(by_session.values())[:count]]


def test_both_engines_count_the_same(trained: dict[str, Artefacts]) -> None:
    local, spark = trained["local"], trained["spark"]
    assert (local.engine, spark.engine) == ("local", "spark")
    assert local.item_ids == spark.item_ids and local.n_items == CLUSTERS * PER_CLUSTER
    assert local.events == spark.events > 600  # the malformed row skipped by both
    assert local.params == spark.params
    assert local.cooccurrence.nnz > 1000 and local.sequential.nnz > 1000
    assert_same_matrix(local.cooccurrence, spark.cooccurrence)
    assert_same_matrix(local.sequential, spark.sequential)
    assert np.array_equal(local.popularity, spark.popularity)
    assert np.array_equal(local.trending, spark.trending)
    assert local.popularity.sum() == local.events


def test_served_lists_are_the_same_from_either_engine(trained: dict[str, Artefacts],
                                                      history: list[list[str]]) -> None:
    contexts = contexts_of(trained["local"], history, 40)
    local = served_top(trained["local"], contexts)
    spark = served_top(trained["spark"], contexts)
    assert all(len(top) == K for top in local)
    assert local == spark


def test_als_of_either_engine_recommends_alike(trained: dict[str, Artefacts],
                                               history: list[list[str]]) -> None:
    """Two ALS implementations from different random starts: not the same factors, but the
    same neighbourhoods (each context's cluster)."""
    contexts = contexts_of(trained["local"], history, 40)
    tops = {}
    for name, artefact in trained.items():
        assert artefact.als_factors is not None
        als = LatentFactors(alpha=artefact.params["als"]["alpha"])
        als.load_factors(artefact.als_factors)
        tops[name] = [best(np.arange(als.n_items), als.score(Context.of(items)), K)
                      for items in contexts]
    overlap = np.mean([len(np.intersect1d(a, b)) / K
                       for a, b in zip(tops["local"], tops["spark"], strict=True)])
    assert overlap >= 0.6, overlap
    # and they find each context's cluster as well as each other (items are coded in id order,
    # a cluster a block; chance would be a third)
    home = [np.bincount(np.asarray(items) // PER_CLUSTER).argmax() for items in contexts]
    in_cluster = {name: np.mean([np.mean(t // PER_CLUSTER == h)
                                 for t, h in zip(top, home, strict=True)])
                  for name, top in tops.items()}
    assert min(in_cluster.values()) > 0.55, in_cluster
    assert abs(in_cluster["local"] - in_cluster["spark"]) < 0.1, in_cluster


def test_stream_counts_new_events_as_a_refit_on_the_whole_log(
        spark: Any, log: Path, history: list[list[str]], trained: dict[str, Artefacts],
        tmp_path: Path) -> None:
    out, source, state = tmp_path / "artefact", tmp_path / "incoming", tmp_path / "state"
    files.publish(trained["spark"], out)
    source.mkdir()
    # later events: known sessions going on, new sessions, new items
    later = [row for row in synthetic_rows(seed=2, sessions=40, start=1_700_500_000)
             if row[0] != "s-bad"]
    for i, row in enumerate(later[:60]):
        row[0] = f"s1-{i % 30}" if row[0] else row[0]
    later[5][2] = "item-new-1"
    write_log(source / "batch-1.csv", [[session or user, item, when, kind]
                                       for session, user, item, when, kind in later],
              STREAM_COLUMNS)

    runner = CliRunner()
    args = ["stream", "--engine", "spark", "--source", str(source), "--out", str(out),
            "--state", str(state), "--history", str(log), "--once"]
    result = runner.invoke(recs_app, args)
    assert result.exit_code == 0, result.output
    streamed = files.load(out)
    whole = train_local(read_csv_log(write_log(tmp_path / "whole.csv", history + later)))
    assert set(streamed.item_ids) == set(whole.item_ids) and "item-new-1" in whole.item_ids
    order = np.asarray([whole.code_of()[item] for item in streamed.item_ids])
    assert streamed.events == whole.events
    assert_same_matrix(streamed.cooccurrence, whole.cooccurrence[order][:, order].tocsr())
    assert_same_matrix(streamed.sequential, whole.sequential[order][:, order].tocsr(),
                       rtol=1e-9)
    assert np.array_equal(streamed.popularity, whole.popularity[order])
    np.testing.assert_allclose(streamed.trending, whole.trending[order], rtol=1e-9)
    assert streamed.params["half_life"] == whole.params["half_life"]

    # the same files again: nothing new to count, nothing published
    again = runner.invoke(recs_app, args)
    assert again.exit_code == 0, again.output
    assert files.load(out).created_at == streamed.created_at

    # a file in another layout stops the stream with a clear error, and counts nothing
    write_log(source / "batch-2.csv", [["i9", "s9", "1700600000", "view"]],
              ["item_id", "session_id", "timestamp", "event_type"])
    wrong = runner.invoke(recs_app, args)
    assert wrong.exit_code == 2 and "the stream stopped" in wrong.output, wrong.output
    assert files.load(out).created_at == streamed.created_at


def test_train_command_publishes_an_artefact(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs"
    result = CliRunner().invoke(recs_app, ["train", "--data", str(log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_symlink() and files.load(out).engine == "local"
    bad = CliRunner().invoke(recs_app, ["train", "--data", str(log), "--out", str(out),
                                        "--engine", "flink"])
    assert bad.exit_code == 2 and "flink" in bad.output
    local_master = CliRunner().invoke(recs_app, ["train", "--data", str(log), "--out", str(out),
                                                 "--master", "local[4]"])
    assert local_master.exit_code == 2 and "--engine spark" in local_master.output
    empty = CliRunner().invoke(recs_app, ["train", "--data", str(write_log(
        tmp_path / "empty.csv", [])), "--out", str(out)], terminal_width=200)
    assert empty.exit_code == 2 and "no readable event" in empty.output
    (tmp_path / "plain").mkdir()
    not_published = CliRunner().invoke(recs_app, ["train", "--data", str(log), "--out",
                                                  str(tmp_path / "plain")], terminal_width=200)
    assert not_published.exit_code == 2 and "--out" in not_published.output


async def stored_log(container: Container) -> None:
    """Behaviour recorded as the API records it: three shoppers, views then a purchase."""
    now = datetime.now(UTC)
    rows = [{"kind": "purchase" if i % 9 == 8 else "view", "session_id": f"s-{i % 3}",
             "product_id": f"P-{(i * 7) % 11}", "occurred_at": now - timedelta(minutes=90 - i)}
            for i in range(60)]
    await container.recommendations.record(rows)


@pytest.mark.one_backend
async def test_train_command_reads_the_stored_behaviour(container: Container, database_url: str,
                                                        tmp_path: Path) -> None:
    await stored_log(container)
    out = tmp_path / "recs"
    done = subprocess.run([INSTOCK, "recs", "train", "--from-db", "--out", str(out)],
                          env=instock_env(database_url, tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    artefact = files.load(out)
    assert artefact.events == 60 and artefact.n_items == 11
    rows = await container.recommendations.stored_behaviour(1000)
    assert_same_matrix(artefact.sequential, train_local(stored_events(rows)).sequential)
    both = CliRunner().invoke(recs_app, ["train", "--from-db", "--data", str(tmp_path),
                                         "--out", str(out)], terminal_width=200)
    assert both.exit_code == 2 and "--from-db" in both.output


@pytest.mark.one_backend
async def test_spark_counts_the_stored_behaviour_as_the_local_engine(
        spark: Any, container: Container) -> None:
    from instock.recommendations import spark as engine

    await stored_log(container)
    raw = stored_events(await container.recommendations.stored_behaviour(1000))
    local = train_local(raw, ALS)
    distributed = engine.train(spark, engine.raw_events(spark, raw), ALS)
    assert local.item_ids == distributed.item_ids
    assert_same_matrix(local.cooccurrence, distributed.cooccurrence)
    assert_same_matrix(local.sequential, distributed.sequential)
    assert np.array_equal(local.trending, distributed.trending)


@pytest.mark.one_backend
async def test_the_bus_drops_behaviour_as_files_the_stream_reads(container: Container,
                                                                 tmp_path: Path) -> None:
    await stored_log(container)
    async with container.db.read() as conn:
        envelopes = (await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.type == BehaviourRecorded.type).order_by(outbox.c.created_at))).scalars()
        recorded = list(envelopes)
    worker = Consumer(container.db, container.bus, behaviour_files(tmp_path / "incoming"))
    for envelope in recorded:
        assert await worker.handle(envelope) == "applied"
    dropped = sorted((tmp_path / "incoming").glob("*.csv"))
    assert len(dropped) == 60 and not list((tmp_path / "incoming").glob(".*"))
    # read by the `csv` log's rules (the stream's), they are the stored events
    raw = RawEvents()
    for path in dropped:
        one = read_csv_log(path)
        assert not one.skipped
        for seq, item, when, kind in zip(one.seq, one.item, one.time, one.kind, strict=True):
            raw.add(seq, item, when, kind)
    stored = stored_events(await container.recommendations.stored_behaviour(1000))
    assert sorted(zip(raw.seq, raw.item, raw.time, raw.kind, strict=True)) == sorted(
        zip(stored.seq, stored.item, stored.time, stored.kind, strict=True))


def test_help_names_the_engines() -> None:
    for command, engines in (("train", ("local", "spark")), ("stream", ("spark",))):
        result = CliRunner().invoke(recs_app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert "--engine" in result.output
        assert all(engine in result.output for engine in engines), result.output


def test_without_pyspark_the_spark_engine_says_how_to_install_it(log: Path,
                                                                 tmp_path: Path) -> None:
    # a fresh interpreter where `import pyspark` fails, as it does before `make spark`
    script = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from typer.testing import CliRunner\n"
        "from instock.recommendations.cli import recs_app\n"
        f"r = CliRunner().invoke(recs_app, ['train', '--engine', 'spark', '--data', {str(log)!r},"
        f" '--out', {str(tmp_path / 'out')!r}], terminal_width=400)\n"
        "print(r.output); sys.exit(r.exit_code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "make spark" in done.stdout and SPARK_MISSING[:40] in " ".join(done.stdout.split())
