"""Cut an input at a point in time (``t4r-app cut``): what the data looked like on an earlier day.

The daily update is rehearsed on one log: "day 1" is every interaction before a cut-off,
"day 2" the whole log. This writes day 1 in the product's input layout, so that it goes
through ``preprocess`` exactly as the user's shards do:

* a record keeps its interactions with a timestamp before the cut-off (a session that spans
  the cut-off is cut inside); a record left with none is dropped and counted;
* the titles file keeps the movies watched before the cut-off: a movie first watched later
  was not in yesterday's catalogue (that is what makes it new on day 2).

The cut-off is a Unix time (``before``) or a quantile of every interaction's timestamp
(``quantile``; the first pass holds the timestamps, 8 bytes each). Bad records are handled by
``on_bad_record`` as in ``preprocess`` and counted. The output folder is marked incomplete
while it is written, as ``import`` does, so ``preprocess`` refuses a cut that was killed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from workflow.list_columns import offsets_of
from t4r_app.data.records import SessionRecordReader
from t4r_app.input_layout.seed_layout import ShardWriter, titles_path, write_titles
from t4r_app.data.sources import IMPORT_INCOMPLETE, resolve_source
from t4r_app.errors import InputError

STATS_FILE = "cut_stats.json"


@dataclass
class CutStats:
    input: str
    output: str
    cutoff: int  # kept: timestamp < cutoff
    quantile: float | None
    records_read: int
    records_rejected: dict[str, int]
    records_written: int
    records_emptied: int  # every interaction at or after the cut-off
    interactions_read: int
    interactions_written: int
    interactions_cut: int
    movies_written: int
    titles_read: int
    titles_written: int


def timestamp_quantile(input_path: str, quantile: float, on_bad_record: str = "fail") -> int:
    """The ``quantile`` of every interaction's timestamp in ``input_path`` (as numpy's "lower")."""
    if not 0.0 < quantile < 1.0:
        raise InputError(f"the cut's quantile must lie strictly between 0 and 1, got {quantile}")
    reader = SessionRecordReader(resolve_source(input_path), on_bad_record, None)
    times = [batch.timestamp for batch in reader]
    if not times:
        raise InputError(f"{input_path}: no interaction to take a quantile of")
    return int(np.quantile(np.concatenate(times), quantile, method="lower"))


def cut_before(input_path: str, output: str | Path, cutoff: int, quantile: float | None = None,
               on_bad_record: str = "fail") -> CutStats:
    """Write ``input_path``'s interactions before ``cutoff`` (Unix time) under ``output``; see the module doc."""
    source = resolve_source(input_path)
    output = Path(output)
    if output.absolute() in {Path(input_path).absolute(), *Path(input_path).absolute().parents}:
        raise InputError(f"cut: --output {output} holds the input {input_path}; write the cut elsewhere")
    output.mkdir(parents=True, exist_ok=True)
    (output / IMPORT_INCOMPLETE).write_text("t4r-app cut is writing this folder, or was killed while it did\n")
    (output / STATS_FILE).unlink(missing_ok=True)
    titles = source.load_titles() or {}
    reader = SessionRecordReader(source, on_bad_record, None)
    written = emptied = interactions_written = 0
    movies: set[int] = set()
    with ShardWriter(output, max(1, len(source.shards))) as writer:
        for batch in reader:
            keep = batch.timestamp < cutoff
            sessions, first = np.unique(batch.session_index, return_index=True)
            kept_per_session = np.add.reduceat(keep.astype(np.int64), first) if len(first) else first
            emptied += int((kept_per_session == 0).sum())
            kept_sessions = kept_per_session > 0
            if not kept_sessions.any():
                continue
            users = batch.user_index[first][kept_sessions]
            lengths = kept_per_session[kept_sessions]
            # The reader keeps a record's interactions together and in order, so the kept ones
            # of each session stay contiguous and in their order after the mask.
            kept_movies = batch.movie_index[keep]
            shard_of_record = (written + np.arange(len(users))) % len(writer.paths)
            writer.write(users, offsets_of(lengths), kept_movies, batch.timestamp[keep], shard_of_record)
            written += len(users)
            interactions_written += int(keep.sum())
            movies.update(np.unique(kept_movies).tolist())
    if written == 0:
        raise InputError(f"cut: no interaction of {input_path} is before {cutoff}; choose a later cut-off")
    kept_titles = {movie: title for movie, title in titles.items() if movie in movies}
    if titles:
        write_titles(output, kept_titles)
    else:
        titles_path(output).unlink(missing_ok=True)
    stats = CutStats(
        input=source.description,
        output=str(output),
        cutoff=int(cutoff),
        quantile=quantile,
        records_read=reader.stats.records_read,
        records_rejected=dict(sorted(reader.stats.records_rejected.items())),
        records_written=written,
        records_emptied=emptied,
        interactions_read=reader.stats.interactions,
        interactions_written=interactions_written,
        interactions_cut=reader.stats.interactions - interactions_written,
        movies_written=len(movies),
        titles_read=len(titles),
        titles_written=len(kept_titles),
    )
    (output / STATS_FILE).write_text(json.dumps(asdict(stats), indent=2))
    (output / IMPORT_INCOMPLETE).unlink()
    return stats


def format_summary(stats: CutStats) -> str:
    rejected = sum(stats.records_rejected.values())
    how = f"the {stats.quantile:g} quantile of the timestamps" if stats.quantile is not None else "given"
    return "\n".join([
        f"cut-off         {stats.cutoff:,} ({how}): interactions before it are kept",
        f"records         {stats.records_read:,} read = {stats.records_written:,} written + {stats.records_emptied:,} "
        f"wholly after the cut-off + {rejected:,} rejected",
        f"interactions    {stats.interactions_read:,} read = {stats.interactions_written:,} written + "
        f"{stats.interactions_cut:,} at or after the cut-off",
        f"movies          {stats.movies_written:,} watched before the cut-off; titles {stats.titles_written:,} "
        f"of {stats.titles_read:,} kept",
    ])
