"""`instock recs stream --engine spark`: keep published artefacts current as events arrive.

A Structured Streaming job over a directory where new behaviour events land as CSV files (the
`csv` log format with the columns STREAM_COLUMNS: the `recs-stream-files` consumer's drop, or
anyone's). Each micro-batch updates the statistics and
publishes a new artefact version atomically (`artefacts.publish`):

- co-occurrence and sequential rules only change within the sequences the batch touches, so
  they are recomputed on those sequences' events, before and after the batch, and the
  difference is added: exactly what a refit on the whole log would count;
- popularity with and without decay is one pass over the kept events, redone in full (the
  anchor and the half-life follow the whole log's time span, as a refit's do);
- ALS factors are kept as trained (an item new since then has none until the next train).

The job keeps every event it counted (Parquet, one partition per batch, the training log as
batch -1) in its state directory, with Spark's checkpoint: a batch replayed after a crash
overwrites its own partition and is skipped once the published artefact says it counted it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from instock.recommendations import artefacts as files
from instock.recommendations import spark as engine
from instock.recommendations.artefacts import statistics
from instock.recommendations.logs import STREAM_COLUMNS
from instock.recommendations.training import AlsSettings, parameters

# Event positions of batch b start at (b + 2) << 40: after the training log's (batch -1), in
# arrival order, so that equal times within a sequence keep the order the files came in.
POSITION_SHIFT = 40
HISTORY_BATCH = -1
BATCH_KEY = "stream_batch"  # in the manifest's params: the last batch the artefact counts


class StreamError(ValueError):
    """The stream cannot start: missing artefact, state or log."""


class Stream:
    """The job's state directory and what each micro-batch does with it."""

    def __init__(self, spark: SparkSession, source: Path, artefact: Path, state: Path) -> None:
        self.spark, self.source, self.artefact, self.state = spark, source, artefact, state
        self.events = state / "events"
        self.batches = 0

    def seed(self, history: Path | None) -> None:
        """On the first run, the training log becomes batch -1 of the kept events."""
        if self.events.exists():
            return
        if history is None:
            raise StreamError(f"{self.state} is new: --history must name the log the artefact "
                              "was trained on (the stream counts new events beside its events)")
        rows = engine.csv_rows(self.spark, history)
        self._save(engine.parse_rows(rows, offset=self._offset(HISTORY_BATCH)), HISTORY_BATCH)

    @staticmethod
    def _offset(batch: int) -> int:
        return (batch + 2) << POSITION_SHIFT

    def _save(self, events: DataFrame, batch: int) -> None:
        # one directory per batch, overwritten whole: a replayed batch is written once
        events.write.mode("overwrite").parquet(str(self.events / f"batch={batch}"))

    def _kept(self, before: int) -> DataFrame:
        kept = self.spark.read.parquet(str(self.events))
        return kept.where(F.col("batch") < before).drop("batch")

    def run_batch(self, rows: DataFrame, batch: int) -> None:
        """One micro-batch (Structured Streaming's foreachBatch)."""
        current = files.load(self.artefact)
        if int(current.params.get(BATCH_KEY, HISTORY_BATCH)) >= batch:
            return  # replayed after a crash: the artefact already counts it
        new = engine.parse_rows(rows, offset=self._offset(batch)).cache()
        if new.isEmpty():
            return
        kept = self._kept(batch).cache()
        touched = new.select("seq").distinct()
        before = kept.join(touched, "seq", "left_semi")
        every = kept.unionByName(new)
        summary: Any = every.agg(F.count(F.lit(1)).alias("n"), F.min("time").alias("first"),
                                 F.max("time").alias("last")).first()
        arrived = {row["item"] for row in new.select("item").distinct().collect()}
        items = current.item_ids + sorted(arrived - set(current.item_ids))
        n = len(items)
        params = parameters(summary["first"], summary["last"],
                            AlsSettings(**current.params["als"]))
        coded = engine.with_codes(self.spark, before.unionByName(new), items)
        coded_before = engine.with_codes(self.spark, before, items)
        pairs = _grown(current.cooccurrence, n) + engine.matrix(
            engine.cooccurrence(coded), n) - engine.matrix(engine.cooccurrence(coded_before), n)
        rules = _grown(current.sequential, n) + engine.matrix(
            engine.sequential(coded, params.steps), n) - engine.matrix(
            engine.sequential(coded_before, params.steps), n)
        coded_every = engine.with_codes(self.spark, every, items)
        counts = engine.vector(engine.popularity(coded_every, params, decayed=False), n)
        trending = engine.vector(engine.popularity(coded_every, params, decayed=True), n)
        factors = current.als_factors
        if factors is not None:
            factors = np.vstack([factors, np.zeros((n - len(factors), factors.shape[1]),
                                                   np.float32)])
        updated = statistics(items, pairs, rules, counts, trending,
                             {**params.manifest(), BATCH_KEY: batch}, "spark-stream",
                             int(summary["n"]), factors)
        self._save(new, batch)
        files.publish(updated, self.artefact)
        kept.unpersist()
        new.unpersist()
        self.batches += 1


def _grown(m: sp.csr_matrix, n: int) -> sp.csr_matrix:
    out = m.copy()
    out.resize((n, n))
    return out


def run(spark: SparkSession, source: Path, artefact: Path, state: Path,
        history: Path | None = None, once: bool = False, max_seconds: float | None = None,
        interval_seconds: float = 10.0) -> int:
    """Run the stream: until the files present are counted (`once`), or for max_seconds (or
    until stopped). Returns how many batches published an artefact."""
    if not (artefact / files.MANIFEST).exists():
        raise StreamError(f"{artefact} is not a published artefact: run `instock recs train` "
                          "first")
    if not source.is_dir():
        raise StreamError(f"{source} is not a directory")
    stream = Stream(spark, source, artefact, state)
    stream.seed(history)
    schema = T.StructType([T.StructField(c, T.StringType()) for c in STREAM_COLUMNS])
    # a file whose header is not STREAM_COLUMNS stops the stream rather than being misread
    rows = spark.readStream.schema(schema).option("header", True).option(
        "enforceSchema", False).csv(str(source))
    writer = rows.writeStream.foreachBatch(
        lambda df, batch: stream.run_batch(df, int(batch))).option(
        "checkpointLocation", str(state / "checkpoint"))
    if once:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{interval_seconds} seconds")
    query = writer.start()
    try:
        if once:
            query.awaitTermination()
        else:
            query.awaitTermination(None if max_seconds is None else math.ceil(max_seconds))
    except StreamingQueryException as exc:  # a bad file, a failed batch: its first line says
        raise StreamError(f"the stream stopped: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        if query.isActive:
            query.stop()
    return stream.batches
