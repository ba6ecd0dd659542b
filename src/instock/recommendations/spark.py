"""`instock recs train --engine spark`: the statistics of `training.py`, computed by PySpark.

For logs too big for one process: the same definitions (co-occurrence of all pairs of a
sequence, sequential rules weighted 1/gap within `steps`, popularity with and without decay,
ALS on sequence x item counts) as DataFrame jobs, in local mode or on a cluster (`--master`).
Only the results come to the driver, to be written as the artefacts serving loads.

Imported only when the Spark engine is asked for: nothing else needs PySpark (`make spark`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from pyspark.ml.recommendation import ALS
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from instock.recommendations.artefacts import Artefacts, statistics
from instock.recommendations.data import FloatArray
from instock.recommendations.logs import RawEvents, check_csv_header, csv_event
from instock.recommendations.protocol import Progress
from instock.recommendations.training import (
    AlsSettings,
    EmptyLog,
    Parameters,
    item_ids,
    parameters,
)

# Local mode shuffles tiny partitions: Spark's default of 200 would spend its time on tasks.
LOCAL_SHUFFLE_PARTITIONS = 2
EVENT = T.StructType([
    T.StructField("seq", T.StringType(), False), T.StructField("item", T.StringType(), False),
    T.StructField("time", T.DoubleType(), False), T.StructField("kind", T.IntegerType(), False),
])
TRAIN_STEPS = 5  # the progress steps of `train`


def session(master: str, conf: Mapping[str, str] | None = None) -> SparkSession:
    """The Spark session on `master` (local[N], spark://host:port, yarn...) with `conf`; made
    once per process: a second call gets the same one."""
    # Python UDFs run in worker processes that must import instock: this very interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("instock-recs")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")  # Rich shows progress
               .config("spark.sql.session.timeZone", "UTC"))
    if master.startswith("local"):
        builder = builder.config("spark.sql.shuffle.partitions", LOCAL_SHUFFLE_PARTITIONS)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if master.startswith("local") and spark.sparkContext.getCheckpointDir() is None:
        # ALS checkpoints every 10 iterations when it can: without it the lineage of its
        # iterations grows until the JVM's stack overflows. (A cluster needs a shared one.)
        spark.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="instock-spark-"))
    return spark


# ---------------------------------------------------------------------------------------------
# Reading


def _parse(row: Row) -> tuple[str, str, float, int] | None:
    """One CSV row through the in-process reader's own rules; None if malformed (skipped)."""
    # Spark reads an empty field as null where Python's csv module reads "".
    rec = {name: "" if value is None else str(value) for name, value in row.asDict().items()}
    try:
        return csv_event(rec)
    except (ValueError, KeyError):
        return None


def parse_rows(rows: DataFrame, offset: int = 0) -> DataFrame:
    """Raw CSV rows (strings) as events (seq, item, time, kind, pos); pos keeps file order
    (from `offset`), which breaks ties of time within a sequence as the local engine does."""
    parse = F.udf(_parse, EVENT)
    # before the UDF: the ids follow the file's partitions, hence its order
    numbered = rows.withColumn("pos", F.monotonically_increasing_id() + F.lit(offset))
    parsed = numbered.select(parse(F.struct(*[F.col(f"`{c}`") for c in rows.columns])).alias("e"),
                             "pos")
    return parsed.where(F.col("e").isNotNull()).select("e.*", "pos")


def csv_rows(spark: SparkSession, path: Path) -> DataFrame:
    """A `csv` log's rows as strings; its header checked as the in-process reader does."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    rows = spark.read.option("header", True).csv(str(path))
    check_csv_header(path, rows.columns)
    return rows


def raw_events(spark: SparkSession, raw: RawEvents) -> DataFrame:
    """Events already read in process (the database's) as a DataFrame, in their order."""
    rows = zip(raw.seq, raw.item, raw.time, raw.kind, range(len(raw.seq)), strict=True)
    return spark.createDataFrame(list(rows), "seq string, item string, time double, "
                                 "kind int, pos long")


# ---------------------------------------------------------------------------------------------
# Statistics (events carry `i`, the item's code)


def with_codes(spark: SparkSession, events: DataFrame, items: list[str]) -> DataFrame:
    codes = spark.createDataFrame(list(enumerate(items)), "i int, item string")
    return events.join(F.broadcast(codes), "item")


def cooccurrence(events: DataFrame) -> DataFrame:
    """(row, col, value): per sequence, count(a) * count(b) for a != b and c * c - c on the
    diagonal (an item pairs with its own other occurrences), summed over sequences."""
    counts = events.groupBy("seq", "i").agg(F.count(F.lit(1)).cast("double").alias("c"))
    a, b = counts.alias("a"), counts.alias("b")
    same = F.col("a.i") == F.col("b.i")
    value = F.col("a.c") * F.col("b.c") - F.when(same, F.col("a.c")).otherwise(F.lit(0.0))
    pairs = a.join(b, F.col("a.seq") == F.col("b.seq")).select(
        F.col("a.i").alias("row"), F.col("b.i").alias("col"), value.alias("value"))
    return _summed(pairs)


def sequential(events: DataFrame, steps: int) -> DataFrame:
    """(row, col, value): b follows a within `steps` events of a sequence, weighted 1/gap."""
    order = Window.partitionBy("seq").orderBy("time", "pos")
    ranked = events.select("seq", "i", F.row_number().over(order).alias("n"))
    a, b = ranked.alias("a"), ranked.alias("b")
    gap = F.col("b.n") - F.col("a.n")
    pairs = a.join(b, (F.col("a.seq") == F.col("b.seq")) & (gap >= 1) & (gap <= steps)).select(
        F.col("a.i").alias("row"), F.col("b.i").alias("col"), (F.lit(1.0) / gap).alias("value"))
    return _summed(pairs)


def _summed(pairs: DataFrame) -> DataFrame:
    summed = pairs.groupBy("row", "col").agg(F.sum("value").alias("value"))
    return summed.where(F.col("value") != 0)


def _kind_weight(params: Parameters) -> Column:
    weights = F.array(*[F.lit(float(w)) for w in params.kind_weights])
    return F.element_at(weights, F.col("kind") + 1)


def popularity(events: DataFrame, params: Parameters, decayed: bool) -> DataFrame:
    """(i, value): kind-weighted counts, each event halved every half_life before the anchor
    when `decayed` (the trending component), as `model.Trending` counts them."""
    weight = _kind_weight(params)
    if decayed:
        weight = weight * F.pow(F.lit(2.0), (F.col("time") - params.anchor) / params.half_life)
    return events.groupBy("i").agg(F.sum(weight).alias("value"))


def matrix(pairs: DataFrame, n: int) -> sp.csr_matrix:
    rows = pairs.collect()
    r = np.fromiter((row["row"] for row in rows), np.int64, len(rows))
    c = np.fromiter((row["col"] for row in rows), np.int64, len(rows))
    v = np.fromiter((row["value"] for row in rows), np.float64, len(rows))
    return sp.csr_matrix((v, (r, c)), shape=(n, n))


def vector(values: DataFrame, n: int) -> FloatArray:
    out = np.zeros(n)
    for row in values.collect():
        out[row["i"]] = row["value"]
    return out


def als_factors(events: DataFrame, settings: AlsSettings, n: int) -> npt.NDArray[np.float32]:
    """Item factors of Spark MLlib's implicit ALS on sequence x item counts (zeros for an item
    it gave none)."""
    partitions = int(events.sparkSession.conf.get("spark.sql.shuffle.partitions") or 10)
    seqs = events.select("seq").distinct().rdd.map(lambda r: r[0]).zipWithIndex().toDF(
        ["seq", "u"])
    counts = events.join(seqs, "seq").groupBy("u", "i").agg(
        F.count(F.lit(1)).cast("float").alias("c"))
    als = ALS(rank=settings.factors, maxIter=settings.iterations,
              regParam=settings.regularization, alpha=settings.alpha, implicitPrefs=True,
              seed=settings.seed, userCol="u", itemCol="i", ratingCol="c",
              # blocks as many as the shuffle's partitions: MLlib's 10 are for a cluster
              numUserBlocks=partitions, numItemBlocks=partitions)
    model = als.fit(counts)
    factors = np.zeros((n, settings.factors), np.float32)
    for row in model.itemFactors.collect():
        factors[row["id"]] = row["features"]
    return factors


def _no_progress(label: str, done: int, total: int) -> None:
    """Progress goes nowhere unless asked for."""


def train(spark: SparkSession, events: DataFrame, als: AlsSettings | None = None,
          progress: Progress | None = None, engine: str = "spark") -> Artefacts:
    """The artefacts of a log's events (seq, item, time, kind, pos)."""
    step = progress or _no_progress
    step("spark: reading the log", 0, TRAIN_STEPS)
    events = events.cache()
    summary: Any = events.agg(F.count(F.lit(1)).alias("n"), F.min("time").alias("first"),
                              F.max("time").alias("last")).first()
    if not summary["n"]:
        raise EmptyLog("the log holds no readable event")
    items = item_ids([row["item"] for row in events.select("item").distinct().collect()])
    params = parameters(summary["first"], summary["last"], als or AlsSettings.default())
    coded = with_codes(spark, events, items).cache()
    n = len(items)
    step("spark: co-occurrence", 1, TRAIN_STEPS)
    pairs = matrix(cooccurrence(coded), n)
    step("spark: sequential rules", 2, TRAIN_STEPS)
    rules = matrix(sequential(coded, params.steps), n)
    step("spark: popularity", 3, TRAIN_STEPS)
    counts = vector(popularity(coded, params, decayed=False), n)
    trending = vector(popularity(coded, params, decayed=True), n)
    step("spark: ALS", 4, TRAIN_STEPS)
    factors = als_factors(coded, params.als, n)
    coded.unpersist()
    events.unpersist()
    step("spark: done", TRAIN_STEPS, TRAIN_STEPS)
    return statistics(items, pairs, rules, counts, trending, params.manifest(), engine,
                      int(summary["n"]), factors)
