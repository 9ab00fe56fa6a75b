"""Scoring a model and the baselines on validation and test with one protocol and one metric code.

Two protocols, as named settings:

* ``full``: each target is ranked against every movie (ids that are not movies, such as
  padding and [MASK], are left out; with ``evaluate.exclude_seen`` the session's own movies too).
* ``sampled``: the BERT4Rec paper's protocol. Each target is ranked against negatives drawn
  by training popularity, without replacement, from movies the session has not seen, with
  a fixed seed, so every scorer meets the same negatives.

The target is never given to a scorer: inputs are the sequences without their last item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from t4r_app.errors import RunError
from t4r_app.metrics import EXCLUDED, ranking_metrics, sampled_ranks, target_ranks
from t4r_app.sequences_io import ItemSequences
from workflow.sequences import FIRST_MOVIE_ID

Scorer = Callable[[ItemSequences, slice], np.ndarray]
"""Scores over item ids for ``sessions`` rows in ``rows``; shape (rows, vocabulary)."""


@dataclass
class EvalSet:
    name: str
    inputs: ItemSequences
    targets: np.ndarray
    negatives: np.ndarray


def movie_ids(vocabulary: int) -> np.ndarray:
    """Ids that are real movies: after padding/null/OOV and before the reserved [MASK] id."""
    return np.arange(FIRST_MOVIE_ID, vocabulary - 1)


def sample_negatives(
    inputs: ItemSequences,
    targets: np.ndarray,
    popularity: np.ndarray,
    count: int,
    seed: int,
) -> np.ndarray:
    """``count`` popularity-weighted negatives per target, never the target itself.

    Movies the session has seen are avoided when enough others remain (tiny catalogues).
    Every movie keeps a weight of at least one interaction so that all can be drawn.
    """
    vocabulary = len(popularity)
    movies = movie_ids(vocabulary)
    count = min(count, len(movies) - 1)
    weights = np.zeros(vocabulary)
    weights[movies] = popularity[movies] + 1.0
    rng = np.random.default_rng(seed)
    negatives = np.empty((len(targets), count), dtype=np.int64)
    for index, target in enumerate(targets):
        row_weights = weights.copy()
        row_weights[target] = 0.0
        unseen = row_weights.copy()
        unseen[inputs.row(index)] = 0.0
        if np.count_nonzero(unseen) >= count:
            row_weights = unseen
        negatives[index] = rng.choice(vocabulary, size=count, replace=False, p=row_weights / row_weights.sum())
    return negatives


def make_eval_set(name: str, sequences: ItemSequences, popularity: np.ndarray, count: int, seed: int) -> EvalSet:
    inputs, targets = sequences.split_last()
    return EvalSet(name, inputs, targets, sample_negatives(inputs, targets, popularity, count, seed))


def evaluate_scorer(
    scorer: Scorer,
    eval_set: EvalSet,
    top_ks: list[int],
    exclude_seen: bool = False,
    batch_size: int = 512,
) -> dict[str, dict[str, float]]:
    """{"full": metrics, "sampled": metrics} of one scorer on one split."""
    full, sampled = [], []
    not_movies = None
    for start in range(0, len(eval_set.targets), batch_size):
        rows = slice(start, min(start + batch_size, len(eval_set.targets)))
        scores = np.array(scorer(eval_set.inputs, rows), dtype=np.float64)
        if not_movies is None:
            not_movies = np.ones(scores.shape[1], dtype=bool)
            not_movies[movie_ids(scores.shape[1])] = False
        scores[:, not_movies] = EXCLUDED
        if exclude_seen:
            for out, index in enumerate(range(rows.start, rows.stop)):
                scores[out, eval_set.inputs.row(index)] = EXCLUDED
        targets = eval_set.targets[rows]
        full.append(target_ranks(scores, targets))
        sampled.append(sampled_ranks(scores, targets, eval_set.negatives[rows]))
    return {
        "full": ranking_metrics(np.concatenate(full), top_ks),
        "sampled": ranking_metrics(np.concatenate(sampled), top_ks),
    }


def model_scorer(model, max_length: int) -> Scorer:
    from t4r_app.scoring import score_batch

    def score(sessions: ItemSequences, rows: slice) -> np.ndarray:
        # Leave room for the [MASK] that inference appends (see scoring.score_batch).
        return score_batch(model, sessions.padded(rows.start, rows.stop, max_length - 1))

    return score


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
    progress: bool = True,
) -> dict:
    """Evaluate a run's model and the baselines; write eval.json, report.md and the plot."""
    from tqdm.auto import tqdm

    from t4r_app.baselines import Markov, MostPopular, item_counts
    from t4r_app.model import max_sequence_length, vocabulary_size
    from t4r_app.report import write_report
    from t4r_app.run_files import load_run, load_schema
    from t4r_app.sequences_io import read_split

    run = load_run(run_dir)
    data_dir = Path(data_dir or run.info.data_dir)
    vocabulary = vocabulary_size(run.schema)
    data_vocabulary = vocabulary_size(load_schema(data_dir / "train"))
    if data_vocabulary != vocabulary:
        raise RunError(
            f"{data_dir} has {data_vocabulary} item ids but the model was trained on {vocabulary}: "
            "evaluate on the data the run was trained on"
        )
    settings = run.config.evaluate
    train = read_split(data_dir, "train").items
    popularity = item_counts(train, vocabulary)
    scorers = {
        "model": model_scorer(run.model, max_sequence_length(run.schema)),
        MostPopular.name: MostPopular(train, vocabulary).score,
        Markov.name: Markov(train, vocabulary).score,
    }
    results: dict = {}
    with tqdm(total=len(splits) * len(scorers), desc="evaluate", unit="scorer", disable=not progress) as bar:
        for split in splits:
            eval_set = make_eval_set(
                split, read_split(data_dir, split).items, popularity, settings.sampled_negatives, run.config.seed
            )
            scored = {}
            for name, scorer in scorers.items():
                bar.set_postfix_str(f"{split}/{name}")
                scored[name] = evaluate_scorer(scorer, eval_set, settings.top_ks, settings.exclude_seen)
                bar.update()
            results[split] = {"model": scored.pop("model"), "baselines": scored}
    results["settings"] = {
        "top_ks": settings.top_ks,
        "exclude_seen": settings.exclude_seen,
        "sampled_negatives": settings.sampled_negatives,
        "seed": run.config.seed,
        "data_dir": str(data_dir),
    }
    run_dir = Path(run_dir)
    (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    write_report(results, run_dir)
    return results
