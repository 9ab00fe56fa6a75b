"""Scoring a model and the baselines on validation and test with one protocol and one metric code.

Every scorer is ranked three ways from one scoring pass:

* ``full``: each target is ranked against every movie (ids that are not movies, such as
  padding and [MASK], are left out).
* ``full_unseen``: the same, with every movie the user is known to have watched before the
  target left out (``data.split_views.known_histories``: the whole training history and the
  inputs, not only the model's window of them), for model and baselines alike. Where nobody
  watches a movie twice (MovieLens) a seen movie is never the answer, so this is the ranking a
  product that hides seen movies shows; a target the user already watched can then not be
  found (it ranks last).
* ``sampled``: the BERT4Rec paper's protocol. Each target is ranked against negatives drawn
  by training popularity, without replacement, from movies the user has not watched, with
  a fixed seed, so every scorer meets the same negatives.

The model's NDCG@10 is compared with each baseline's on the same rows by a paired bootstrap
(``comparison`` in eval.json). ``by_history`` repeats every scorer's metrics per bucket of how
many movies the user watched before the target (1, 2-4, 5-9, 10-49, 50+), with the users in each. ``slices`` repeats the metrics for two groups of targets:
``rare``, the least-watched 20% of the movies with training interactions, and ``cold``,
movies with none (seen only in validation or test, or withheld by ``train.withhold_movies``).
Over all movies a cold target has to beat every trained one, which no scorer here does, so
the cold slice also ranks it ``among_cold``: among the untrained movies only, the user's
own left out (a "new arrivals" shelf). The baselines are fitted on each sequence's whole training
part (``data.split_views.training_histories``), not on the model's window of it in ``train/``.
The target is never given to a scorer: inputs are the sequences without their last item.
A scorer that gives a movie NaN or +inf is an error (``NonFiniteScores``): a NaN would
otherwise rank first and count as a hit. -inf is a movie the scorer may never recommend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from t4r_app.data.item_sequences import ItemSequences
from t4r_app.errors import RunError
from t4r_app.evaluate.metrics import ndcg_per_row, paired_bootstrap, ranking_metrics, sampled_ranks, target_ranks
from t4r_app.evaluate.results import (
    AMONG_COLD,
    COMPARED_K,
    PROTOCOLS,
    BootstrapComparison,
    BootstrapSettings,
    EvaluationResults,
    EvaluationSettings,
    ScorerResults,
    SliceResults,
    HISTORY_BUCKETS,
    UNSEEN_LEAVES_OUT,
    SplitResults,
)
from workflow.columns import EXCLUDED, movie_ids

COMPARED_PROTOCOLS = ("full", "full_unseen")  # the bootstrap compares the full rankings only
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
RARE_SHARE = 0.2

Scorer = Callable[[ItemSequences, slice], np.ndarray]
"""Scores over item ids for ``sessions`` rows in ``rows``; shape (rows, vocabulary)."""


class NonFiniteScores(RunError):
    """A scorer gave NaN or an infinity to a movie: no rank means anything then."""


@dataclass
class EvalSet:
    name: str
    inputs: ItemSequences
    targets: np.ndarray
    negatives: np.ndarray
    known: ItemSequences  # per row, every movie the user watched before the target (inputs included)


def sample_negatives(
    known: ItemSequences,
    targets: np.ndarray,
    popularity: np.ndarray,
    count: int,
    seed: int,
) -> np.ndarray:
    """``count`` popularity-weighted negatives per target, never the target itself.

    Movies the user has watched (``known``) are avoided when enough others remain (tiny catalogues).
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
        unseen[known.row(index)] = 0.0
        if np.count_nonzero(unseen) >= count:
            row_weights = unseen
        negatives[index] = rng.choice(vocabulary, size=count, replace=False, p=row_weights / row_weights.sum())
    return negatives


def make_eval_set(
    name: str, sequences: ItemSequences, popularity: np.ndarray, count: int, seed: int, known: ItemSequences | None = None
) -> EvalSet:
    """The split's inputs and targets; ``known`` defaults to the inputs (a history that starts with the window)."""
    inputs, targets = sequences.split_last()
    known = inputs if known is None else known
    if len(known) != len(targets):
        raise ValueError(f"{name}: {len(known)} known histories for {len(targets)} targets")
    return EvalSet(name, inputs, targets, sample_negatives(known, targets, popularity, count, seed), known)


def scorer_ranks(
    scorer: Scorer, eval_set: EvalSet, batch_size: int = 512, cold: np.ndarray | None = None, name: str = "scorer"
) -> dict[str, np.ndarray]:
    """The target's rank in every row under each protocol, from one scoring pass; with ``cold``
    (a mask over item ids) also AMONG_COLD, meaningful in the rows whose target is cold.
    Raises NonFiniteScores, naming ``name``, where a movie's score is NaN or infinite."""
    ranks: dict[str, list[np.ndarray]] = {protocol: [] for protocol in PROTOCOLS + ((AMONG_COLD,) if cold is not None else ())}
    not_movies = None
    for start in range(0, len(eval_set.targets), batch_size):
        rows = slice(start, min(start + batch_size, len(eval_set.targets)))
        scores = np.array(scorer(eval_set.inputs, rows), dtype=np.float64)
        if not_movies is None:
            not_movies = np.ones(scores.shape[1], dtype=bool)
            not_movies[movie_ids(scores.shape[1])] = False
        _check_finite(scores, not_movies, name, eval_set.name, rows)
        scores[:, not_movies] = EXCLUDED
        targets = eval_set.targets[rows]
        ranks["full"].append(target_ranks(scores, targets))
        ranks["sampled"].append(sampled_ranks(scores, targets, eval_set.negatives[rows]))
        # In place: the scores are this batch's own copy and nothing reads them afterwards.
        scores[eval_set.known.cells(rows.start, rows.stop)] = EXCLUDED
        ranks["full_unseen"].append(target_ranks(scores, targets))
        if cold is not None:
            scores[:, ~cold] = EXCLUDED
            ranks[AMONG_COLD].append(target_ranks(scores, targets))
    return {protocol: np.concatenate(parts) for protocol, parts in ranks.items()}


def _check_finite(scores: np.ndarray, not_movies: np.ndarray, scorer: str, split: str, rows: slice) -> None:
    """-inf is a movie the scorer may never recommend (it ranks last); NaN and +inf have no rank.
    Checked in boolean masks, not on a copy of the movie columns: this runs on every batch."""
    invalid = np.isnan(scores) | np.isposinf(scores)
    invalid[:, not_movies] = False
    if invalid.any():
        bad_rows, _ = np.nonzero(invalid)
        raise NonFiniteScores(
            f"{scorer} gave {int(invalid.sum()):,} NaN or +inf movie score(s) on {split} rows "
            f"{rows.start + bad_rows.min()}..{rows.start + bad_rows.max()}: its ranks would mean nothing; "
            "check the run (a diverged training leaves NaN weights)"
        )


def evaluate_scorer(scorer: Scorer, eval_set: EvalSet, top_ks: list[int], batch_size: int = 512) -> ScorerResults:
    """One scorer's metrics on one split, for every protocol."""
    return ranks_metrics(scorer_ranks(scorer, eval_set, batch_size), top_ks)


def ranks_metrics(ranks: dict[str, np.ndarray], top_ks: list[int]) -> ScorerResults:
    """The metrics of {protocol: target ranks}."""
    return ScorerResults(**{protocol: ranking_metrics(protocol_ranks, top_ks) for protocol, protocol_ranks in ranks.items()})


def compare_ranks(
    model: dict[str, np.ndarray], baseline: dict[str, np.ndarray], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, BootstrapComparison]:
    """Model minus baseline NDCG@10 per compared protocol, with a paired bootstrap 95% interval."""
    comparison = {}
    for protocol in COMPARED_PROTOCOLS:
        difference, low, high = paired_bootstrap(
            ndcg_per_row(model[protocol], COMPARED_K),
            ndcg_per_row(baseline[protocol], COMPARED_K),
            resamples,
            seed,
            BOOTSTRAP_LEVEL,
        )
        comparison[protocol] = BootstrapComparison(difference, (low, high), resamples)
    return comparison


def history_buckets(known: ItemSequences) -> dict[str, np.ndarray]:
    """Boolean row masks per HISTORY_BUCKETS name: how many movies the user watched before the target."""
    lengths = known.lengths
    return {
        name: (lengths >= first) & (lengths <= (last if last is not None else np.iinfo(np.int64).max))
        for name, first, last in HISTORY_BUCKETS
    }


def target_slices(targets: np.ndarray, training_counts: np.ndarray, new_movies: int = 0) -> dict[str, np.ndarray]:
    """Boolean row masks: ``rare`` targets (least-watched RARE_SHARE of trained movies), ``cold`` ones
    (never trained) and, when the data was preprocessed ``--vocabulary-from`` an older DATA_DIR, ``new``
    ones: the ``new_movies`` movies it did not know, which hold the last movie ids."""
    movies = movie_ids(len(training_counts))
    trained = movies[training_counts[movies] > 0]
    # By count, then id: exactly RARE_SHARE of the trained movies, however many share a count.
    by_count = trained[np.lexsort((trained, training_counts[trained]))]
    rare = by_count[: int(round(RARE_SHARE * len(trained)))]
    slices = {"rare": np.isin(targets, rare), "cold": training_counts[targets] == 0}
    if new_movies:
        slices["new"] = np.isin(targets, movies[-new_movies:])
    return slices


def slice_metrics(
    ranks: dict[str, dict[str, np.ndarray]], rows: np.ndarray, top_ks: list[int], protocols: tuple[str, ...]
) -> SliceResults:
    """Every scorer's metrics on the ``rows`` of one slice, for ``protocols`` (none when no row is in it)."""
    scorers = {
        name: ranks_metrics({p: by_protocol[p][rows] for p in protocols}, top_ks) for name, by_protocol in ranks.items()
    } if rows.any() else {}
    return SliceResults(int(rows.sum()), scorers)


def model_scorer(model, session_length: int) -> Scorer:
    """Scores for each row's known history, its latest ``session_length`` items (``inference_length``)."""
    from t4r_app.model.inference import next_item_scores

    def score(sessions: ItemSequences, rows: slice) -> np.ndarray:
        return next_item_scores(model, sessions.padded(rows.start, rows.stop, session_length))

    return score


def evaluate_results(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
    progress: bool = True,
) -> EvaluationResults:
    """The model and the baselines on ``splits``: metrics per protocol, the bootstrap comparison, the slices.

    Writes nothing (``evaluate_run`` writes the files), so training can check validation alone.
    """
    from tqdm.auto import tqdm

    from t4r_app.data.item_sequences import REPEAT_SHARE_THRESHOLD, read_split, repeat_stats
    from t4r_app.data.preprocess_stats import load_preprocess_stats
    from t4r_app.data.split_views import known_histories, training_histories, withheld_movies
    from t4r_app.data.title_vectors import load_title_vectors
    from t4r_app.evaluate.baselines import Markov, MostPopular, RepeatRecent, TitlePopularity, item_counts, repeat_baseline_note
    from t4r_app.model.architecture import model_label, vocabulary_size
    from t4r_app.model.saved_run import load_run, load_schema

    run = load_run(run_dir)
    data_dir = Path(data_dir or run.info.data_dir)
    vocabulary = vocabulary_size(run.schema)
    data_vocabulary = vocabulary_size(load_schema(data_dir / "train"))
    if data_vocabulary != vocabulary:
        raise RunError(
            f"{data_dir} has {data_vocabulary} item ids but the model was trained on {vocabulary}: "
            "evaluate on the data the run was trained on"
        )
    settings, seed = run.config.evaluate, run.config.seed
    # NDCG@10 is always reported: the comparison and the verdicts read it.
    top_ks = sorted(set(settings.top_ks) | {COMPARED_K})
    new_movies = load_preprocess_stats(data_dir).items_new or 0
    history = training_histories(data_dir, withheld_movies(data_dir, run.config.train.withhold_movies, seed))
    popularity = item_counts(history, vocabulary)
    cold = np.zeros(vocabulary, dtype=bool)
    cold[movie_ids(vocabulary)] = popularity[movie_ids(vocabulary)] == 0
    scorers = {
        "model": model_scorer(run.model, run.session_length),
        MostPopular.name: MostPopular(history, vocabulary).score,
        Markov.name: Markov(history, vocabulary).score,
    }
    with_repeats, repeat_note = repeat_baseline_note(repeat_stats(history).share, REPEAT_SHARE_THRESHOLD)
    if with_repeats:
        scorers[RepeatRecent.name] = RepeatRecent(history, vocabulary).score
    if run.config.model.title_embeddings != "off":
        titles = load_title_vectors(data_dir, vocabulary, progress=False)
        scorers[TitlePopularity.name] = TitlePopularity(history, vocabulary, titles).score
    results: dict[str, SplitResults] = {}
    with tqdm(total=len(splits) * len(scorers), desc="evaluate", unit="scorer", disable=not progress) as bar:
        for split in splits:
            rows = read_split(data_dir, split)
            known = known_histories(data_dir, split)
            eval_set = make_eval_set(split, rows.items, popularity, settings.sampled_negatives, seed, known)
            ranks = {}
            for name, scorer in scorers.items():
                bar.set_postfix_str(f"{split}/{name}")
                try:
                    ranks[name] = scorer_ranks(scorer, eval_set, cold=cold, name=name)
                except NonFiniteScores as error:
                    raise NonFiniteScores(f"{run_dir}: {error}") from None
                bar.update()
            results[split] = _split_results(
                ranks, target_slices(eval_set.targets, popularity, new_movies), top_ks, seed, history_buckets(eval_set.known)
            )
    return EvaluationResults(
        results,
        EvaluationSettings(
            top_ks=top_ks,
            protocols=list(PROTOCOLS),
            sampled_negatives=settings.sampled_negatives,
            seed=seed,
            bootstrap=BootstrapSettings(f"ndcg@{COMPARED_K}", BOOTSTRAP_RESAMPLES, seed, BOOTSTRAP_LEVEL),
            baselines_fitted_on="each sequence's whole training part (no window)",
            slices={
                "rare": f"targets among the least-watched {RARE_SHARE:.0%} of trained movies",
                "cold": f"targets without training interactions; {AMONG_COLD}: ranked among the {int(cold.sum())} such movies",
                **({"new": f"targets among the {new_movies:,} movies new since the vocabulary this data kept (--vocabulary-from)"}
                   if new_movies else {}),
            },
            data_dir=str(data_dir),
            unseen_leaves_out=UNSEEN_LEAVES_OUT,
            repeat_baseline=repeat_note,
            model_label=model_label(run.config.model),
        ),
    )


def _split_results(
    ranks: dict[str, dict[str, np.ndarray]],
    slices: dict[str, np.ndarray],
    top_ks: list[int],
    seed: int,
    histories: dict[str, np.ndarray] | None = None,
) -> SplitResults:
    """One split's results from every scorer's target ranks ("model" first) and the row masks of
    the slices and of the history-length buckets."""
    by_slice = {
        name: slice_metrics(ranks, rows, top_ks, PROTOCOLS + ((AMONG_COLD,) if name == "cold" else ()))
        for name, rows in slices.items()
    }
    by_history = {name: slice_metrics(ranks, rows, top_ks, PROTOCOLS) for name, rows in (histories or {}).items()}
    ranks = {name: {p: by_protocol[p] for p in PROTOCOLS} for name, by_protocol in ranks.items()}
    model = ranks.pop("model")
    return SplitResults(
        model=ranks_metrics(model, top_ks),
        baselines={name: ranks_metrics(r, top_ks) for name, r in ranks.items()},
        comparison={name: compare_ranks(model, r, seed=seed) for name, r in ranks.items()},
        slices=by_slice,
        by_history=by_history,
    )


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
    progress: bool = True,
) -> EvaluationResults:
    """``evaluate_results``, written to RUN_DIR: eval.json, report.md and the plot."""
    from t4r_app.evaluate.report import write_report

    results = evaluate_results(run_dir, data_dir, splits, progress)
    results.write(run_dir)
    write_report(results, Path(run_dir))
    return results
