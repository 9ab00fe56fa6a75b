"""Generate a synthetic movie-sessions dataset in the user's layout, streaming.

The world it simulates is built so that a sequence model has something to learn that
neither popularity nor a first-order Markov chain captures on its own:

* movies have Zipf-skewed popularity and belong to one of several taste groups;
* each user has a taste group; most next movies are the *taste-specific* successor of the
  last one (``successor[group, movie]``, drawn from the whole catalogue), so the last movie
  alone is ambiguous between groups and the history tells which successor applies;
* other steps draw from the user's group, from global popularity, or repeat the last movie;
* watching happens in sessions separated by days, items within a session hours apart,
  with occasional identical timestamps. A session is one record; records are shuffled
  across shards.

Users are generated in chunks, so 25M interactions never sit in memory at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from t4r_app.input_layout.input_defaults import MEAN_INTERACTIONS, SHARDS
from t4r_app.input_layout.seed_layout import ShardWriter, write_titles, write_zip
from workflow.list_columns import offsets_of

SAMPLE_FILE = "sample_sessions.jsonl"
SAMPLE_SESSIONS, SAMPLE_LENGTH = 5, 12
_START_TIME = 1_420_070_400  # 2015-01-01
_TIME_SPAN = 2 * 365 * 86_400
_ADJECTIVES = (
    "Silent Crimson Electric Broken Golden Hidden Last Midnight Northern Paper Quiet Restless "
    "Savage Secret Shallow Silver Sleeping Starlit Stolen Sunday Tender Wandering Wild Winter"
).split()
_NOUNS = (
    "Harbor Empire Garden River Kingdom Letter Machine Mirror Mountain Ocean Orchard Planet "
    "Road Shadow Signal Station Storm Summer Tide Tower Valley Voyage Whisper Window"
).split()


@dataclass
class GenerationSpec:
    users: int
    movies: int
    seed: int = 0
    shards: int = SHARDS
    mean_interactions: float = MEAN_INTERACTIONS  # per user
    mean_session_length: float = 5.0
    follow_probability: float = 0.55  # next = taste-specific successor of the last movie
    taste_probability: float = 0.25  # next = a movie of the user's group
    repeat_probability: float = 0.03  # next = the last movie again
    tie_probability: float = 0.05  # next has the same timestamp as the last
    chunk_users: int = 20_000

    def check(self) -> None:
        if self.users < 1 or self.movies < 2 or self.shards < 1:
            raise ValueError("generate needs at least 1 user, 2 movies and 1 shard")
        if self.mean_interactions < 1:
            raise ValueError("mean_interactions must be at least 1")


@dataclass
class GenerationSummary:
    users: int
    movies: int
    records: int
    interactions: int
    shards: list[str]
    titles: str
    zip: str | None

    def describe(self) -> str:
        """What ``generate`` prints."""
        return (
            f"wrote {self.records:,} records ({self.interactions:,} interactions) of {self.users:,} users over "
            f"{len(self.shards)} shards to {Path(self.titles).parent}" + (f"\nzip: {self.zip}" if self.zip else "")
        )


def movie_title(movie: int) -> str:
    """A unique, deterministic, human-looking title for a movie index."""
    adjective = _ADJECTIVES[movie % len(_ADJECTIVES)]
    noun = _NOUNS[(movie // len(_ADJECTIVES)) % len(_NOUNS)]
    sequel = movie // (len(_ADJECTIVES) * len(_NOUNS))
    suffix = f" {sequel + 1}" if sequel else ""
    return f"{adjective} {noun}{suffix} ({1950 + movie * 7 % 75})"


class _World:
    """Movie popularity, taste groups and successor tables shared by all users."""

    def __init__(self, spec: GenerationSpec, rng: np.random.Generator):
        self.groups = int(np.clip(spec.movies // 10, 2, 24))
        popularity = 1.0 / np.arange(1, spec.movies + 1) ** 0.9
        self.popularity = rng.permutation(popularity)
        self.popularity_cdf = np.cumsum(self.popularity) / self.popularity.sum()
        group_of_movie = rng.integers(0, self.groups, spec.movies)
        group_of_movie[: self.groups] = np.arange(self.groups)  # no empty group
        order = np.argsort(group_of_movie, kind="stable")
        self.movies_by_group = order
        weights = self.popularity[order]
        self.group_cum = np.cumsum(weights)
        bounds = np.searchsorted(group_of_movie[order], np.arange(self.groups + 1))
        self.group_low = np.concatenate([[0.0], self.group_cum])[bounds[:-1]]
        self.group_high = self.group_cum[bounds[1:] - 1]
        # Successors are drawn from the whole catalogue, so a movie does not give away the
        # taste group of who watched it: only the history does.
        self.successor = np.stack([self.sample_popular(spec.movies, rng) for _ in range(self.groups)])

    def sample_in_group(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        low, high = self.group_low[groups], self.group_high[groups]
        draw = low + rng.random(len(groups)) * (high - low)
        index = np.minimum(np.searchsorted(self.group_cum, draw, side="right"), len(self.group_cum) - 1)
        return self.movies_by_group[index]

    def sample_popular(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return np.minimum(np.searchsorted(self.popularity_cdf, rng.random(count)), len(self.popularity) - 1)


def _simulate_users(world: _World, spec: GenerationSpec, first_user: int, count: int, rng: np.random.Generator):
    """Return (user per interaction, movie, timestamp, session id) for users [first, first+count)."""
    lengths = np.minimum(1 + rng.geometric(1.0 / spec.mean_interactions, count), int(spec.mean_interactions * 10))
    lengths = np.maximum(lengths - 1, 1)
    taste = rng.integers(0, world.groups, count)
    total = int(lengths.sum())
    starts = offsets_of(lengths)[:-1]
    movies = np.empty(total, dtype=np.int64)
    times = np.empty(total, dtype=np.int64)
    session = np.empty(total, dtype=np.int64)
    last_movie = world.sample_in_group(taste, rng)
    clock = _START_TIME + rng.integers(0, _TIME_SPAN, count)
    session_id = np.zeros(count, dtype=np.int64)
    for step in range(int(lengths.max())):
        active = np.flatnonzero(lengths > step)
        n = len(active)
        roll = rng.random(n)
        follow = roll < spec.follow_probability
        in_taste = ~follow & (roll < spec.follow_probability + spec.taste_probability)
        repeat = ~follow & ~in_taste & (roll < spec.follow_probability + spec.taste_probability + spec.repeat_probability)
        chosen = world.sample_popular(n, rng)
        chosen[in_taste] = world.sample_in_group(taste[active[in_taste]], rng)
        chosen[follow] = world.successor[taste[active[follow]], last_movie[active[follow]]]
        chosen[repeat] = last_movie[active[repeat]]
        if step > 0:
            new_session = rng.random(n) < 1.0 / spec.mean_session_length
            gap = rng.integers(5_400, 10_800, n)  # a movie's length: 1.5 to 3 hours
            gap[rng.random(n) < spec.tie_probability] = 0
            gap[new_session] = 86_400 + rng.exponential(10 * 86_400, int(new_session.sum())).astype(np.int64)
            clock[active] += gap
            session_id[active] += new_session
        position = starts[active] + step
        movies[position] = chosen
        times[position] = clock[active]
        session[position] = session_id[active]
        last_movie[active] = chosen
    users = np.repeat(np.arange(first_user, first_user + count, dtype=np.int64), lengths)
    return users, movies, times, session


def _sample_sessions(users: np.ndarray, movies: np.ndarray, count: int) -> list[dict]:
    """The recent history of the first users, in the input format of `t4r-app predict`."""
    samples = []
    for user in np.unique(users)[: max(count, 0)]:
        history = movies[users == user][-SAMPLE_LENGTH:]
        samples.append({"session_id": f"user-{user}", "movieIndices": history.tolist()})
    return samples


def generate_dataset(spec: GenerationSpec, output: str | Path, make_zip: bool = False) -> GenerationSummary:
    """Write ``output/recommendation/{dataset/data-*.tfrecord, movie_title_by_index.json}``.

    Also writes ``output/sample_sessions.jsonl``: a few users' recent histories to try
    ``t4r-app predict`` on.
    """
    spec.check()
    output = Path(output)
    rng = np.random.default_rng(spec.seed)
    world = _World(spec, rng)
    records = interactions = 0
    samples: list[dict] = []
    with ShardWriter(output, spec.shards) as writer, tqdm(total=spec.users, desc="generate", unit="users") as progress:
        for first in range(0, spec.users, spec.chunk_users):
            count = min(spec.chunk_users, spec.users - first)
            users, movies, times, session = _simulate_users(world, spec, first, count, rng)
            # A record is one (user, session); boundaries fall where either changes.
            boundary = np.flatnonzero((np.diff(users) != 0) | (np.diff(session) != 0)) + 1
            offsets = np.concatenate([[0], boundary, [len(users)]])
            chunk_records = len(offsets) - 1
            shard_of_record = rng.integers(0, spec.shards, chunk_records)
            order = rng.permutation(chunk_records)
            records += writer.write(users[offsets[:-1]], offsets, movies, times, shard_of_record, order)
            interactions += len(users)
            samples += _sample_sessions(users, movies, SAMPLE_SESSIONS - len(samples))
            progress.update(count)
    titles_file = write_titles(output, {m: movie_title(m) for m in range(spec.movies)})
    zip_path = write_zip(output, [*writer.paths, titles_file]) if make_zip else None
    summary = GenerationSummary(
        users=spec.users,
        movies=spec.movies,
        records=records,
        interactions=interactions,
        shards=[str(p) for p in writer.paths],
        titles=str(titles_file),
        zip=str(zip_path) if zip_path else None,
    )
    with open(output / SAMPLE_FILE, "w") as handle:
        handle.writelines(json.dumps(sample) + "\n" for sample in samples)
    (output / "generation.json").write_text(json.dumps({"spec": asdict(spec), **asdict(summary)}, indent=2))
    return summary
