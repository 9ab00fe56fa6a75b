"""Evaluation guards: no target leakage, Trainer metrics equal a NumPy reference, and the
protocols (full, sampled, exclude_seen) behave. Shuffled targets: see test_demo_quality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers4rec.torch as tr

from t4r_app.baselines import MostPopular, item_counts
from t4r_app.evaluation import EvalSet, evaluate_run, evaluate_scorer, make_eval_set, model_scorer, sample_negatives
from t4r_app.metrics import ranking_metrics, target_ranks
from t4r_app.model import max_sequence_length, vocabulary_size
from t4r_app.run_files import load_run
from t4r_app.sequences_io import ItemSequences, read_split
from t4r_app.training import training_arguments


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run)


def _model_scores(run, sessions: ItemSequences) -> np.ndarray:
    score = model_scorer(run.model, max_sequence_length(run.schema))
    return np.concatenate([score(sessions, slice(s, s + 256)) for s in range(0, len(sessions), 256)])


def test_trainer_metrics_agree_with_a_numpy_reference(loaded, tiny_data, tmp_path):
    vocabulary = vocabulary_size(loaded.schema)
    args = training_arguments(loaded.config, tmp_path, max_sequence_length(loaded.schema), vocabulary, 1, False)
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
        assert from_trainer[f"eval_/next-item/ndcg_at_{k}"] == pytest.approx(reference[f"ndcg@{k}"], abs=1e-4)
        assert from_trainer[f"eval_/next-item/recall_at_{k}"] == pytest.approx(reference[f"hr@{k}"], abs=1e-4)
    assert reference["hr@1"] <= reference["hr@5"] <= reference["hr@10"]
    assert from_trainer["eval_/next-item/ndcg_at_10"] < 0.9  # three epochs cannot be that good without leakage


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


def test_exclude_seen_takes_the_sessions_movies_out_of_the_ranking():
    inputs = ItemSequences.from_lists([[3, 4], [5, 6]])
    eval_set = EvalSet("t", inputs, np.array([4, 7]), np.array([[5, 6], [3, 4]]))

    def repeat_last(sessions, rows):  # scores the session's last movie highest, then id order
        scores = np.tile(-np.arange(10.0), (rows.stop - rows.start, 1))
        for out, index in enumerate(range(rows.start, rows.stop)):
            scores[out, sessions.row(index)[-1]] = 100
        return scores

    kept = evaluate_scorer(repeat_last, eval_set, [1])
    excluded = evaluate_scorer(repeat_last, eval_set, [1], exclude_seen=True)
    assert kept["full"]["hr@1"] == 0.5  # row 0 repeats its last movie
    assert excluded["full"]["hr@1"] == 0.0  # a seen target cannot be recommended any more
    # row 1 (target 7): ids 3,4 rank above 7 when kept; with 5, 6 removed only 3, 4 remain above
    assert excluded["full"]["mrr"] < kept["full"]["mrr"]


def test_evaluate_run_writes_the_report(tiny_run):
    results = evaluate_run(tiny_run, progress=False)
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved["test"]["model"]["full"]["ndcg@10"] == results["test"]["model"]["full"]["ndcg@10"]
    for split in ("valid", "test"):
        for protocol in ("full", "sampled"):
            assert {"hr@10", "ndcg@10", "mrr", "hr@1", "ndcg@20"} <= set(saved[split]["model"][protocol])
        assert set(saved[split]["baselines"]) == {"most_popular", "markov"}
        assert "ndcg@10" in saved[split]["baselines"]["markov"]["full"]
        # the sampled protocol ranks among 101 items: easier than the full ranking
        assert saved[split]["model"]["sampled"]["hr@10"] >= saved[split]["model"]["full"]["hr@10"]
    report = (tiny_run / "report.md").read_text()
    assert "| BERT4Rec |" in report and "| Markov (1st order) |" in report and "Validation" in report
    assert (tiny_run / "eval_plot.png").stat().st_size > 1000
