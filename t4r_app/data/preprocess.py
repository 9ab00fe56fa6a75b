"""``t4r-app preprocess``: TFRecord shards -> interactions -> NVTabular sequences -> splits.

Outputs under DATA_DIR::

    interactions/      stage 1: one row per (user, session, movie, timestamp, event_order)
    sequences/         every user's (or record's) encoded, time-ordered sequence
    categories/        Categorify's fitted vocabulary, which the schemas point to
    workflow/          the fitted NVTabular workflow (reloadable with nvt.Workflow.load)
    train/ valid/ test/  the examples of the split rule, with the merlin schema
    item_mapping.parquet  item_id <-> movie_index <-> title, with interaction counts; movies
                       only in the titles file come last, with 0 interactions
    stats.json         counts that reconcile from records read to examples written
    config.yaml        the resolved configuration of this run

stats.json is the completion mark: it is removed first and written last (atomically), so a
run killed at any moment leaves a DATA_DIR without it, which ``train`` refuses
(``check_complete``); a rerun clears the earlier outputs and writes them again, identically.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

import nvtabular as nvt
from t4r_app.config import AppConfig, DaskConfig, save_config
from t4r_app.data.interactions import write_interactions
from t4r_app.data.item_sequences import list_sequences, repeat_stats
from t4r_app.data.parquet_parts import read_parquet_columns
from t4r_app.data.preprocess_stats import (
    STATS_FILE,
    DroppedInteractions,
    ItemIds,
    LengthSummary,
    PreprocessStats,
    RepeatStats,
    SequenceCounts,
    SplitRuleStats,
    SplitStats,
)
from t4r_app.data.records import ReadStats
from t4r_app.data.sources import resolve_source
from t4r_app.errors import PreprocessError
from workflow.columns import FIRST_MOVIE_ID, ITEM_LIST, RAW_MOVIE, TIMESTAMP, USER
from workflow.sequences import build_sequence_workflow, build_split_workflow, sequence_key
from workflow.splits import ROLES, SplitRule

ROWS_PER_PARTITION = 2_000_000
# What a run writes, cleared before it starts again (other files in DATA_DIR are left alone).
OUTPUTS = ("interactions", "sequences", "categories", "workflow", *ROLES, "item_mapping.parquet")


def _clear_outputs(output: Path) -> None:
    (output / STATS_FILE).unlink(missing_ok=True)  # first: from here on the folder is incomplete
    for name in OUTPUTS:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@dataclass
class PreprocessResult:
    output_dir: Path
    stats: PreprocessStats

    def describe(self) -> str:
        """What ``preprocess`` prints."""
        return f"{format_summary(self.stats)}\noutputs in {self.output_dir} ({STATS_FILE} has every count)"


@contextlib.contextmanager
def dask_client(settings: DaskConfig) -> Iterator[object | None]:
    """A dask.distributed client when the config asks for one, else None (synchronous)."""
    if not settings.scheduler_address and not settings.n_workers:
        yield None
        return
    from distributed import Client, LocalCluster
    from merlin.core.utils import set_dask_client

    # P2P shuffling (the 2023.7 default with a client) fails inside NVTabular's shuffle
    # (dask/distributed#7816); the task-based shuffle is reliable and deterministic.
    with dask.config.set({"dataframe.shuffle.method": "tasks"}), contextlib.ExitStack() as stack:
        if settings.scheduler_address:
            client = stack.enter_context(Client(settings.scheduler_address))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=settings.n_workers,
                    threads_per_worker=1,
                    memory_limit=settings.memory_limit,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        set_dask_client(client)
        try:
            yield client
        except _worker_lost_errors() as error:
            # A worker died and the cluster gave its tasks up: nothing was marked complete.
            raise PreprocessError(
                f"a Dask worker died during the run ({_describe(error)}); the outputs were not "
                "marked complete (no stats.json): run `t4r-app preprocess` again"
            ) from error
        finally:
            set_dask_client(None)


def _describe(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:  # KilledWorker's str() needs the worker's state, which may not have travelled
        return type(error).__name__


def _worker_lost_errors() -> tuple[type[BaseException], ...]:
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    return (KilledWorker, CommClosedError)


def _list_lengths(directory: Path, column: str = ITEM_LIST) -> np.ndarray:
    # A part with no rows can come back with a null-typed column: it has no lengths to add.
    chunks = [c for c in read_parquet_columns(directory, [column])[column].chunks if not pa.types.is_null(c.type)]
    if not chunks:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([pc.list_value_length(chunk).to_numpy(zero_copy_only=False) for chunk in chunks])


def _temporal_cutoffs(config: AppConfig, interactions_dir: Path) -> tuple[int, int]:
    split = config.split
    if split.valid_cutoff is not None and split.test_cutoff is not None:
        return split.valid_cutoff, split.test_cutoff
    # Exact quantiles over one int64 column: 200 MB at 25M interactions.
    times = read_parquet_columns(interactions_dir, [TIMESTAMP])[TIMESTAMP].to_numpy()
    valid, test = (
        given if given is not None else int(np.quantile(times, quantile, method="higher"))
        for given, quantile in ((split.valid_cutoff, split.valid_quantile), (split.test_cutoff, split.test_quantile))
    )
    if valid >= test:
        raise PreprocessError(f"temporal cut-offs collapse: valid {valid} is not before test {test}")
    return valid, test


def _write_item_mapping(workflow_dir: Path, titles: dict[int, str] | None, output: Path) -> pd.DataFrame:
    uniques = pd.read_parquet(workflow_dir / "categories" / f"unique.{RAW_MOVIE}.parquet")
    mapping = pd.DataFrame(
        {
            "item_id": uniques.index.to_numpy(dtype=np.int64),
            "movie_index": uniques[RAW_MOVIE].to_numpy(dtype=np.int64),
            "interactions": uniques[f"{RAW_MOVIE}_size"].to_numpy(dtype=np.int64),
        }
    )
    mapping["title"] = mapping["movie_index"].map(titles) if titles else None
    mapping.to_parquet(output, index=False)
    return mapping


VOCABULARY_FILE = Path("categories") / f"unique.{RAW_MOVIE}.parquet"  # Categorify's fitted movies, row index = item id


def read_previous_vocabulary(previous: str | Path) -> pd.DataFrame:
    """The fitted movies of a previous DATA_DIR (``--vocabulary-from``), read before anything is written."""
    path = Path(previous) / VOCABULARY_FILE
    if not path.is_file():
        raise PreprocessError(f"--vocabulary-from {previous}: no {VOCABULARY_FILE} there; give a DATA_DIR written by `t4r-app preprocess`")
    return pd.read_parquet(path)


def _keep_vocabulary(workflow, output: Path, old: pd.DataFrame, input_schema) -> int:
    """Give every movie of a previous vocabulary its old item id; append the others.

    Categorify just fitted this data's movies with ids by popularity, so a refit would move
    ids. Here the previous vocabulary comes first, each movie at its old id (with this data's
    count, 0 where it no longer appears), and the movies it did not hold follow in the fitted
    order. Returns how many are new.
    """
    path = output / VOCABULARY_FILE
    fitted = pd.read_parquet(path)
    counts = dict(zip(fitted[RAW_MOVIE].tolist(), fitted[f"{RAW_MOVIE}_size"].tolist()))
    kept = old[[RAW_MOVIE]].assign(**{f"{RAW_MOVIE}_size": [counts.get(movie, 0) for movie in old[RAW_MOVIE].tolist()]})
    known = set(old[RAW_MOVIE].tolist())
    new = fitted[~fitted[RAW_MOVIE].isin(known)]
    start = int(old.index.max()) + 1 if len(old) else FIRST_MOVIE_ID
    new = new.set_axis(pd.RangeIndex(start, start + len(new)))
    pd.concat([kept, new]).astype(fitted.dtypes.to_dict()).to_parquet(path)
    # Categorify reads its vocabulary size from this file when the schema is built: rebuild it.
    workflow.graph.construct_schema(input_schema, preserve_dtypes=True)
    return len(new)


def _add_title_only_movies(workflow, output: Path, titles: dict[int, str] | None, input_schema) -> int:
    """Give movies that are in the titles file but in no record an item id, after the watched ones.

    Categorify fitted the watched movies (ids by popularity, as always); the others join its
    vocabulary with zero interactions, so a model with title features can recommend them and
    sessions may hold them. Placeholder titles ("unknown") describe nothing and stay out.
    Returns how many joined.
    """
    from t4r_app.data.title_vectors import is_placeholder

    path = output / "categories" / f"unique.{RAW_MOVIE}.parquet"
    fitted = pd.read_parquet(path)
    watched = set(fitted[RAW_MOVIE].tolist())
    extra = sorted(movie for movie, title in (titles or {}).items() if movie not in watched and not is_placeholder(title))
    if not extra:
        return 0
    start = int(fitted.index.max()) + 1 if len(fitted) else FIRST_MOVIE_ID
    added = pd.DataFrame(
        {RAW_MOVIE: np.asarray(extra, dtype=fitted[RAW_MOVIE].dtype), f"{RAW_MOVIE}_size": 0},
        index=pd.RangeIndex(start, start + len(extra)),
    )
    pd.concat([fitted, added]).to_parquet(path)
    # Categorify reads its vocabulary size from this file when the schema is built: rebuild it.
    workflow.graph.construct_schema(input_schema, preserve_dtypes=True)
    return len(extra)


def _partitions(config: AppConfig, interactions: int) -> int:
    return config.preprocess.partitions or max(1, -(-interactions // ROWS_PER_PARTITION))


def preprocess(
    config: AppConfig,
    input_path: str,
    output_dir: str | Path,
    titles_path: str | None = None,
    vocabulary_from: str | Path | None = None,
) -> PreprocessResult:
    """``input_path`` checked, grouped and split into ``output_dir``; with ``vocabulary_from`` (a
    previous DATA_DIR) every movie it knew keeps its item id and new movies get the next ones."""
    # NVTabular (imported above, and by workflow.sequences) is slow to import: the CLI imports
    # this module inside the preprocess command only, which keeps `t4r-app --help` fast.
    started = time.perf_counter()
    # Workers of a running cluster write the outputs (Categorify's vocabulary among them) from
    # their own working directory: a relative path would land there, not under the client's.
    output = Path(output_dir).absolute()
    if vocabulary_from and Path(vocabulary_from).absolute() == output:
        raise PreprocessError(
            f"--vocabulary-from {vocabulary_from} is the --output folder: write the new data beside the old one, so that "
            "a preprocess that fails or is killed midway leaves the old data whole"
        )
    previous = read_previous_vocabulary(vocabulary_from) if vocabulary_from else None
    output.mkdir(parents=True, exist_ok=True)
    _clear_outputs(output)
    save_config(config, output / "config.yaml")
    source = resolve_source(input_path, titles_path)
    titles = source.load_titles()
    use_titles = titles if config.preprocess.require_titles else None
    timings = {}

    read_stats = write_interactions(
        source, use_titles, config.preprocess.on_bad_record, config.preprocess.rows_per_part, output / "interactions"
    )
    timings["read_records"] = time.perf_counter() - started
    if read_stats.interactions == 0:
        raise PreprocessError(
            f"no interaction left after reading {read_stats.records_read} records "
            f"(rejected: {dict(read_stats.records_rejected) or 'none'}) from {source.description}"
        )
    partitions = _partitions(config, read_stats.interactions)
    workflow_dir = output / "workflow"
    sequences_dir = output / "sequences"
    stage_started = time.perf_counter()
    with dask_client(config.dask), tqdm(total=2 + len(ROLES), desc="workflow", unit=" stage") as stages:
        stages.set_postfix_str("fit Categorify")
        interactions = nvt.Dataset(str(output / "interactions" / "*.parquet"), engine="parquet", cpu=True)
        sequence_workflow = build_sequence_workflow(
            config.preprocess.sequence_by, config.preprocess.drop_consecutive_duplicates, output
        )
        sequence_workflow.fit(interactions)
        new_watched = _keep_vocabulary(sequence_workflow, output, previous, interactions.schema) if previous is not None else 0
        title_only = _add_title_only_movies(sequence_workflow, output, titles, interactions.schema)
        stages.update()
        stages.set_postfix_str("group sequences")
        by_key = interactions.shuffle_by_keys([sequence_key(config.preprocess.sequence_by)], npartitions=partitions)
        for stale in (sequences_dir, workflow_dir):
            shutil.rmtree(stale, ignore_errors=True)
        sequence_workflow.transform(by_key).to_parquet(str(sequences_dir), output_files=partitions)
        sequence_workflow.save(str(workflow_dir))
        stages.update()
        timings["sequences"] = time.perf_counter() - stage_started

        if config.split.rule == "temporal":
            valid_cutoff, test_cutoff = _temporal_cutoffs(config, output / "interactions")
        else:
            valid_cutoff = test_cutoff = None
        rule = SplitRule(config.split.rule, config.preprocess.max_seq_length, valid_cutoff, test_cutoff)
        sequences = nvt.Dataset(str(sequences_dir / "*.parquet"), engine="parquet", cpu=True, schema=sequence_workflow.output_schema)
        for role in ROLES:
            stage_started = time.perf_counter()
            stages.set_postfix_str(f"split {role}")
            split_workflow = build_split_workflow(
                sequence_workflow.output_schema, rule, role, config.preprocess.min_sequence_length
            )
            shutil.rmtree(output / role, ignore_errors=True)
            split_workflow.transform(sequences).to_parquet(str(output / role), output_files=partitions)
            stages.update()
            timings[f"split_{role}"] = time.perf_counter() - stage_started

    mapping = _write_item_mapping(workflow_dir, titles, output / "item_mapping.parquet")
    stats = PreprocessStats(
        input=source.description,
        read=read_stats,
        kept=_count_kept(output / "sequences", config.preprocess.min_sequence_length, read_stats),
        items=len(mapping),
        item_ids=ItemIds.for_movies(len(mapping)),
        split=SplitRuleStats(config.split.rule, valid_cutoff, test_cutoff),
        splits={role: _split_stats(output / role) for role in ROLES},
        items_titles_only=title_only,
        items_new=new_watched + title_only if previous is not None else None,
    )
    timings["total"] = time.perf_counter() - started
    stats.timings_s = {name: round(seconds, 3) for name, seconds in timings.items()}
    stats.write(output)
    return PreprocessResult(output, stats)


def _one_interaction_note(count: int) -> str:
    return f"; {count:,} of one interaction: no input, so not evaluated either" if count else ""


def _count_kept(sequences_dir: Path, min_sequence_length: int, read_stats: ReadStats) -> SequenceCounts:
    """Interactions and sequences after grouping (consecutive duplicates dropped), and those long enough to train on."""
    sequences = list_sequences(read_parquet_columns(sequences_dir, [ITEM_LIST])[ITEM_LIST])
    lengths = sequences.lengths
    long_enough = lengths >= min_sequence_length
    user_column = read_parquet_columns(sequences_dir, [USER])[USER]
    users = np.unique(user_column.to_numpy()[long_enough]) if len(long_enough) else []
    return SequenceCounts(
        interactions_dropped=DroppedInteractions(
            consecutive_duplicates=read_stats.interactions - int(lengths.sum()),
            short_sequences=int(lengths[~long_enough].sum()),
        ),
        interactions=int(lengths[long_enough].sum()),
        # How often a sequence comes back to a movie it already holds: serve.exclude_seen=auto reads it.
        repeats=repeat_stats(sequences, long_enough),
        sequences=int(long_enough.sum()),
        sequences_dropped_short=int((~long_enough).sum()),
        sequences_one_interaction=int((lengths == 1).sum()),
        users=int(len(users)),
    )


def _split_stats(role_dir: Path) -> SplitStats:
    lengths = _list_lengths(role_dir)
    return SplitStats(sequences=int(len(lengths)), interactions=int(lengths.sum()), length=LengthSummary.of(lengths))


def _titles_only_note(stats: PreprocessStats) -> str:
    count = stats.items_titles_only
    return f", {count:,} of them only in the titles file," if count else ""


def _repeats_line(repeats: RepeatStats | None) -> list[str]:
    if repeats is None:  # stats.json of a DATA_DIR from before repeats were measured
        return []
    return [
        f"repeats         {repeats.interactions:,} interactions ({repeats.share:.2%}) repeat a "
        "movie earlier in their sequence"
    ]


def format_summary(stats: PreprocessStats) -> str:
    """The one-screen summary printed at the end of ``preprocess``."""
    read, kept, ids = stats.read, stats.kept, stats.item_ids
    rejected = ", ".join(f"{k}: {v}" for k, v in sorted(read.records_rejected.items())) or "none"
    shards_rejected = ", ".join(f"{k}: {v}" for k, v in sorted(read.shards_rejected.items())) or "none"
    dropped = kept.interactions_dropped
    lines = [
        f"input           {stats.input}",
        f"shards          {read.shards_read} read, rejected: {shards_rejected}",
        f"records         {read.records_read:,} read = {read.records_kept:,} kept + "
        f"{sum(read.records_rejected.values()):,} rejected ({rejected})",
        f"interactions    {read.interactions:,} read -> {kept.interactions:,} trained on "
        f"({dropped.consecutive_duplicates:,} consecutive duplicates dropped; {dropped.short_sequences:,} in "
        f"{kept.sequences_dropped_short:,} sequences too short to train on, still evaluated"
        f"{_one_interaction_note(kept.sequences_one_interaction)})",
        *_repeats_line(kept.repeats),
        f"users / items   {kept.users:,} users, {stats.items:,} movies"
        f"{_titles_only_note(stats)} "
        f"(item ids {ids.first_movie}..{ids.last_movie}, padding {ids.padding}, mask {ids.mask})",
        *([f"vocabulary      the previous DATA_DIR's ids kept; {stats.items_new:,} new movies after them"]
          if stats.items_new is not None else []),
        f"split rule      {stats.split.rule}",
        "split      sequences  interactions  length min / median / max",
    ]
    for role, split in stats.splits.items():
        length = split.length
        lines.append(
            f"{role:<10} {split.sequences:>9,}  {split.interactions:>12,}  "
            f"{length.min} / {length.median:g} / {length.max}"
        )
    lines.append(f"time            {stats.timings_s['total']:.1f} s")
    return "\n".join(lines)
