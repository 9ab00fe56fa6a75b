"""Evaluation guards: no target leakage, Trainer metrics equal a NumPy reference, the
protocols (full, full_unseen, sampled) behave, the bootstrap comparison, the baselines' training
history, the verdicts. Shuffled targets: see test_demo_quality."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import transformers4rec.torch as tr
from conftest import decoded, movie_of_item, run
from conftest import read_split as read_frame

from t4r_app.cli import main
from t4r_app.config import load_config
from t4r_app.data.item_sequences import ItemSequences, read_split
from t4r_app.data.split_views import known_histories, training_histories
from t4r_app.evaluate.baselines import Markov, RepeatRecent, repeat_baseline_note
from t4r_app.evaluate.metrics import RankingMetrics, ranking_metrics, target_ranks
from t4r_app.evaluate.protocol import (
    EvalSet,
    NonFiniteScores,
    compare_ranks,
    evaluate_results,
    evaluate_scorer,
    make_eval_set,
    model_scorer,
    sample_negatives,
    scorer_ranks,
)
from t4r_app.evaluate.report import INTERVAL_SCOPE, baseline_verdicts, report_table, validation_verdicts, verdict, verdict_lines
from t4r_app.evaluate.results import BootstrapComparison, EvaluationResults, ScorerResults, SplitResults
from t4r_app.model.architecture import max_sequence_length, vocabulary_size
from t4r_app.model.saved_run import MONITOR_METRIC, load_run
from t4r_app.train.trainer import training_arguments


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run)


# How T4R's Trainer names its metrics: MONITOR_METRIC is "<prefix>/ndcg_at_10".
TRAINER_PREFIX = MONITOR_METRIC.rsplit("/", 1)[0]


def _model_scores(run, sessions: ItemSequences) -> np.ndarray:
    score = model_scorer(run.model, run.session_length)
    return np.concatenate([score(sessions, slice(s, s + 256)) for s in range(0, len(sessions), 256)])


def test_trainer_metrics_agree_with_a_numpy_reference(loaded, tiny_data, tmp_path):
    vocabulary = vocabulary_size(loaded.schema)
    args = training_arguments(loaded.config, tmp_path, max_sequence_length(loaded.schema), vocabulary, 1)
    trainer = tr.Trainer(
        model=loaded.model,
        args=args,
        schema=loaded.schema,
        eval_dataset_or_path=str(tiny_data / "valid"),
        compute_metrics=True,
    )
    from_trainer = trainer.evaluate()
    inputs, targets = read_split(tiny_data, "valid").items.split_last()
    reference = ranking_metrics(target_ranks(_model_scores(loaded, inputs), targets), [1, 5, 10, 20])
    for k in (1, 5, 10, 20):
        assert from_trainer[f"{TRAINER_PREFIX}/ndcg_at_{k}"] == pytest.approx(reference.ndcg[k], abs=1e-4)
        assert from_trainer[f"{TRAINER_PREFIX}/recall_at_{k}"] == pytest.approx(reference.hr[k], abs=1e-4)
    assert reference.hr[1] <= reference.hr[5] <= reference.hr[10]
    assert from_trainer[MONITOR_METRIC] < 0.9  # three epochs cannot be that good without leakage


def test_evaluation_inputs_end_before_the_target(tiny_data):
    sequences = read_split(tiny_data, "test").items
    eval_set = make_eval_set("test", sequences, np.ones(70), 10, seed=0)
    assert (eval_set.inputs.lengths == sequences.lengths - 1).all()
    assert (eval_set.targets == sequences.values[sequences.offsets[1:] - 1]).all()
    for index in range(len(sequences)):
        assert (eval_set.inputs.row(index) == sequences.row(index)[:-1]).all()


def test_sampled_negatives_are_fixed_popular_unseen_and_never_the_target():
    inputs = ItemSequences.from_lists([[3, 4], [5], [6, 7, 8]] * 50)
    targets = np.array([5, 6, 3] * 50)
    popularity = np.zeros(40)
    popularity[3:39] = np.arange(36, 0, -1)  # id 3 most popular
    negatives = sample_negatives(inputs, targets, popularity, 10, seed=1)
    assert negatives.shape == (150, 10)
    assert (negatives == sample_negatives(inputs, targets, popularity, 10, seed=1)).all()
    for row in range(150):
        assert len(set(negatives[row])) == 10 and targets[row] not in negatives[row]
        assert not set(negatives[row]) & set(inputs.row(row))
        assert all(3 <= n < 39 for n in negatives[row])  # movies only: no padding, OOV or [MASK]
    counts = np.bincount(negatives.ravel(), minlength=40)
    assert counts[9:15].sum() > counts[30:36].sum()  # drawn by popularity


def test_one_scoring_pass_ranks_over_all_movies_and_without_the_users_watched_movies():
    inputs = ItemSequences.from_lists([[3, 4], [5, 6]])
    # Row 1's user also watched 3 before the window: it is left out too.
    known = ItemSequences.from_lists([[3, 4], [3, 5, 6]])
    eval_set = EvalSet("t", inputs, np.array([4, 7]), np.array([[5, 6], [3, 4]]), known)
    calls = []

    def repeat_last(sessions, rows):  # scores the session's last movie highest, then id order
        calls.append(rows)
        scores = np.tile(-np.arange(10.0), (rows.stop - rows.start, 1))
        for out, index in enumerate(range(rows.start, rows.stop)):
            scores[out, sessions.row(index)[-1]] = 100
        return scores

    results = evaluate_scorer(repeat_last, eval_set, [1])
    assert len(calls) == 1  # both rankings (and the sampled one) come from one call per batch
    assert set(results.by_protocol()) == {"full", "full_unseen", "sampled"}
    kept, excluded = results.full, results.full_unseen
    assert kept.hr[1] == 0.5  # row 0 repeats its last movie
    assert excluded.hr[1] == 0.0  # a seen target cannot be recommended any more
    # row 1 (target 7): 6 (its last), 3, 4, 5 rank above 7 over all movies; without 3, 5 and 6 only 4 does
    assert scorer_ranks(repeat_last, eval_set)["full"][1] == 5
    assert scorer_ranks(repeat_last, eval_set)["full_unseen"][1] == 2


def test_a_nan_or_plus_infinity_score_is_an_error_naming_the_scorer_and_minus_infinity_ranks_last():
    eval_set = make_eval_set("valid", ItemSequences.from_lists([[3, 4, 5], [6, 7]]), np.ones(10), 2, seed=0)

    def scores_with(value):
        def scorer(sessions, rows):
            scores = np.tile(np.arange(10.0), (rows.stop - rows.start, 1))
            scores[-1, 8] = value
            return scores
        return scorer

    for bad in (np.nan, np.inf):
        with pytest.raises(NonFiniteScores, match=r"broken gave 1 NaN or \+inf movie score\(s\) on valid rows 1\.\.1"):
            scorer_ranks(scores_with(bad), eval_set, name="broken")
    ranks = scorer_ranks(scores_with(-np.inf), eval_set)["full"]
    assert ranks[1] == 1  # target 7: 8 may not be recommended and 9 is [MASK], not a movie


def test_known_histories_hold_the_whole_past_of_each_user(tiny_data):
    valid, test = read_split(tiny_data, "valid"), read_split(tiny_data, "test")
    known_valid = known_histories(tiny_data, "valid")
    known_test = known_histories(tiny_data, "test")
    inputs, _ = test.items.split_last()
    window = max(inputs.lengths)
    assert (known_test.lengths >= inputs.lengths).all() and (known_test.lengths > window).any()
    valid_row = {user: index for index, user in enumerate(valid.users)}
    for index, user in enumerate(test.users):
        assert (known_test.row(index)[-inputs.lengths[index]:] == inputs.row(index)).all()  # ends with the inputs
        if user in valid_row:  # leave-one-out: the test past is the validation past plus the validation target
            row = valid_row[user]
            assert (known_test.row(index) == np.append(known_valid.row(row), valid.items.row(row)[-1])).all()
    assert len(known_test) == len(test.users) and len(known_valid) == len(valid.users)


def test_leaving_seen_movies_out_only_lifts_unseen_targets(loaded, tiny_data):
    sequences = read_split(tiny_data, "valid").items
    eval_set = make_eval_set("valid", sequences, np.ones(vocabulary_size(loaded.schema)), 10, seed=0)
    ranks = scorer_ranks(model_scorer(loaded.model, loaded.session_length), eval_set)
    seen = np.array([target in eval_set.inputs.row(i) for i, target in enumerate(eval_set.targets)])
    assert seen.any() and (~seen).any()  # the synthetic data repeat movies now and then
    assert (ranks["full_unseen"][~seen] <= ranks["full"][~seen]).all()
    assert (ranks["full_unseen"][~seen] < ranks["full"][~seen]).any()
    assert (ranks["full_unseen"][seen] == vocabulary_size(loaded.schema)).all()  # ranked last


def test_comparison_of_identical_and_of_clearly_different_scorers():
    ranks = {"full": np.arange(1, 401) % 37 + 1, "full_unseen": np.arange(1, 401) % 23 + 1}
    same = compare_ranks(ranks, {k: v.copy() for k, v in ranks.items()})
    assert {p: c.to_json() for p, c in same.items()} == {
        p: {"ndcg@10_difference": 0.0, "ci95": [0.0, 0.0], "resamples": 1000} for p in ("full", "full_unseen")
    }
    better = compare_ranks({k: np.maximum(1, v // 5) for k, v in ranks.items()}, ranks)
    for protocol in ("full", "full_unseen"):
        low, high = better[protocol].ci95
        assert 0 < low <= better[protocol].difference <= high


def test_baselines_see_the_whole_training_history_never_a_target(tiny_data):
    """tiny_data keeps 20 items per example; the baselines get every sequence's full training part."""
    history = training_histories(tiny_data)
    window = read_split(tiny_data, "train").items
    assert window.lengths.max() == 20 < history.lengths.max()
    transitions = (np.maximum(history.lengths - 1, 0).sum(), np.maximum(window.lengths - 1, 0).sum())
    assert transitions[0] > transitions[1]
    # leave_one_out: exactly each sequence but its last two items (the valid and test targets)
    full = read_frame(tiny_data, "sequences")["item_id-list"]
    expected = sorted(tuple(items[:-2]) for items in full if len(items) >= 5)
    assert sorted(tuple(history.row(i)) for i in range(len(history))) == expected


def test_temporal_history_ends_before_the_validation_cutoff(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    run(fixture_dataset, out, "split.rule=temporal", "split.valid_cutoff=150", "split.test_cutoff=300", "max_seq_length=3")
    history = training_histories(out)
    lookup = movie_of_item(out)
    # user 3's six movies all come before 150 (train/ keeps the last 3); user 7 has one: too short
    assert [[lookup[i] for i in history.row(r)] for r in range(len(history))] == [[30, 31, 32, 33, 34, 35]]
    assert decoded(out, "train") == {3: [33, 34, 35]}


def test_old_configs_with_evaluate_exclude_seen_still_load(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("evaluate:\n  top_ks: [5, 10]\n  exclude_seen: true\n")
    with pytest.warns(FutureWarning, match="evaluate.exclude_seen is no longer used"):
        config = load_config(path)
    assert config.evaluate.top_ks == [5, 10] and not hasattr(config.evaluate, "exclude_seen")


def test_verdicts_follow_the_interval_not_the_point_estimate():
    def ndcg(value):
        return RankingMetrics(hr={}, ndcg={10: value}, mrr=0.0, count=1)

    def scored(value):
        return ScorerResults(full=ndcg(value), full_unseen=ndcg(value + 0.1), sampled=ndcg(value))

    def compared(low, high):
        return {protocol: BootstrapComparison((low + high) / 2, (low, high), 1000) for protocol in ("full", "full_unseen")}

    def split(model, markov, popular, markov_interval, popular_interval):
        baselines = {"most_popular": scored(popular), "markov": scored(markov)}
        comparison = {"most_popular": compared(*popular_interval), "markov": compared(*markov_interval)}
        return SplitResults(scored(model), baselines, comparison, {})

    results = EvaluationResults({
        # Higher than MostPopular, but its interval straddles 0: not a win.
        "valid": split(0.041, 0.060, 0.040, (-0.03, -0.01), (-0.002, 0.004)),
        "test": split(0.5, 0.1, 0.1, (0.3, 0.5), (0.3, 0.5)),
    }, settings=None)  # verdicts read no setting
    assert baseline_verdicts(results) == [
        "validation: the model is NOT distinguishable from most_popular over all movies (0.041 vs 0.040 NDCG@10; "
        "95% interval of the difference [-0.002, +0.004])",
        "validation: the model LOSES to markov over all movies (0.041 vs 0.060 NDCG@10; "
        "95% interval of the difference [-0.030, -0.010])",
        "validation: the model is NOT distinguishable from most_popular with the user's watched movies left out "
        "(0.141 vs 0.140 NDCG@10; 95% interval of the difference [-0.002, +0.004])",
        "validation: the model LOSES to markov with the user's watched movies left out (0.141 vs 0.160 NDCG@10; "
        "95% interval of the difference [-0.030, -0.010])",
    ]
    assert baseline_verdicts(results, "test") == []
    assert verdict_lines(results, "test")[0].startswith("test: the model beats every baseline")
    assert verdict_lines(results, "test")[-1] == INTERVAL_SCOPE
    assert [verdict(0.001, 0.2), verdict(-0.2, -0.001), verdict(-0.1, 0.1)] == ["beats", "loses", "not distinguishable"]


def test_evaluate_writes_both_rankings_the_comparison_and_the_verdicts(tiny_run_copy, capsys):
    tiny_run = tiny_run_copy  # evaluate writes into the run: never into the shared tiny_run
    assert main(["evaluate", "--run", str(tiny_run), "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tiny_run / "eval.json").read_text())
    for split in ("valid", "test"):
        scorers = {"model": saved[split]["model"], **saved[split]["baselines"]}
        # The generated data repeat movies now and then (above 1%): the repeat baseline is scored.
        assert set(saved[split]["baselines"]) == {"most_popular", "markov", "repeat_recent"}
        for metrics in scorers.values():
            assert set(metrics) == {"full", "full_unseen", "sampled"}
            assert {"hr@10", "ndcg@10", "mrr", "hr@1", "ndcg@20"} <= set(metrics["full_unseen"])
            # the sampled protocol ranks among 101 items: easier than the full ranking
            assert metrics["sampled"]["hr@10"] >= metrics["full"]["hr@10"]
        for name in ("most_popular", "markov"):
            for protocol in ("full", "full_unseen"):
                comparison = saved[split]["comparison"][name][protocol]
                difference = comparison["ndcg@10_difference"]
                expected = saved[split]["model"][protocol]["ndcg@10"] - saved[split]["baselines"][name][protocol]["ndcg@10"]
                assert difference == pytest.approx(expected)
                assert comparison["resamples"] == 1000
                assert comparison["ci95"][0] <= difference <= comparison["ci95"][1]
    assert "exclude_seen" not in saved["settings"]
    # The history buckets split every row once: their weighted means are the overall figures.
    for split in ("valid", "test"):
        buckets = saved[split]["by_history"]
        assert list(buckets) == ["1", "2-4", "5-9", "10-49", "50+"]
        assert sum(bucket["rows"] for bucket in buckets.values()) == saved[split]["model"]["full"]["count"]
        for protocol in ("full", "full_unseen"):
            weighted = sum(bucket["rows"] * bucket["model"][protocol]["ndcg@10"] for bucket in buckets.values() if bucket["rows"])
            assert weighted / saved[split]["model"][protocol]["count"] == pytest.approx(saved[split]["model"][protocol]["ndcg@10"])
    assert saved["settings"]["repeat_baseline"].startswith("repeat_recent included")
    report = (tiny_run / "report.md").read_text()
    rows = ["| over all movies | BERT4Rec |", "| with the user's watched movies left out | Markov (1st order) |",
            "| sampled (100 negatives) | MostPopular |", "| MostPopular | over all movies | "]
    for text in rows + verdict_lines(EvaluationResults.from_json(saved), "valid"):
        assert text in printed and text in report
    assert "## Validation (" in report and "## Test (" in report
    assert report.startswith("# BERT4Rec evaluation") and saved["settings"]["model_label"] == "BERT4Rec"
    # The tables name the model by its architecture, not always BERT4Rec.
    sasrec = EvaluationResults.from_json(saved)
    sasrec = EvaluationResults(sasrec.splits, dataclasses.replace(sasrec.settings, model_label="SASRec"))
    assert "| over all movies | SASRec |" in report_table(sasrec, "test") and "BERT4Rec" not in report_table(sasrec, "test")
    assert "| movies watched before the target: users |" in report and "| 10-49: " in printed
    assert (tiny_run / "eval_plot.png").stat().st_size > 1000


def test_training_prints_the_validation_verdicts_without_touching_eval_json(tiny_run):
    before = (tiny_run / "eval.json").read_text() if (tiny_run / "eval.json").exists() else None
    printed = validation_verdicts(tiny_run).splitlines()
    assert printed[-1] == INTERVAL_SCOPE
    assert len(printed) > 1 and all(line.startswith("validation: the model ") for line in printed[:-1])
    after = (tiny_run / "eval.json").read_text() if (tiny_run / "eval.json").exists() else None
    assert after == before


def test_repeat_recent_puts_the_most_and_most_recently_watched_first_then_markov():
    train = ItemSequences.from_lists([[3, 4, 5, 3, 4, 6], [5, 6, 7], [8, 9]])
    sessions = ItemSequences.from_lists([[6, 8, 3, 8, 5, 8], [8]])
    scores = RepeatRecent(train, 12).score(sessions, slice(0, 2))
    markov = Markov(train, 12).score(sessions, slice(0, 2))
    order = np.argsort(-scores[0], kind="stable")
    assert order[:4].tolist() == [8, 5, 3, 6]  # watched thrice, then by recency
    unwatched = np.setdiff1d(np.arange(3, 12), [3, 5, 6, 8])
    # after the watched movies, Markov's order exactly (from 5: 3 and 6 follow it, both watched here)
    assert np.array_equal(np.argsort(-scores[0][unwatched], kind="stable"), np.argsort(-markov[0][unwatched], kind="stable"))
    assert np.argmax(scores[1]) == 8 and np.argsort(-scores[1])[1] == 9  # Markov: 8 -> 9


def test_repeat_recent_is_scored_only_where_histories_repeat():
    assert repeat_baseline_note(0.0, 0.01)[0] is False
    included, why = repeat_baseline_note(0.25, 0.01)
    assert included and "25.00% of training interactions repeat" in why


def test_known_histories_follow_the_sequences_when_each_record_is_one(fixture_dataset, tmp_path):
    """sequence_by=record: a user owns several sequences; each row's known history is its own session's."""
    run(fixture_dataset, tmp_path / "out", "sequence_by=record", "min_sequence_length=3")
    test = read_split(tmp_path / "out", "test")
    assert len(set(test.users.tolist())) < len(test.users)  # one user, several sessions
    inputs, _ = test.items.split_last()
    known = known_histories(tmp_path / "out", "test")
    assert [known.row(i).tolist() for i in range(len(known))] == [inputs.row(i).tolist() for i in range(len(inputs))]
