"""On the demo data the trained BERT4Rec must beat both baselines, and only for real reasons.

This trains the demo configuration once (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from t4r_app.data.item_sequences import read_split
from t4r_app.evaluate.baselines import MostPopular, item_counts
from t4r_app.evaluate.protocol import EvalSet, evaluate_results, evaluate_scorer, make_eval_set, model_scorer
from t4r_app.model.architecture import vocabulary_size
from t4r_app.model.saved_run import load_run

# demo_run trains the demo configuration 100 epochs (about 7 minutes): `make test-quality`, which CI
# runs after `make test`, so that `make test` stays a few minutes.
pytestmark = [pytest.mark.slow, pytest.mark.quality]


def test_model_beats_most_popular_and_markov_on_test(demo_run):
    results = evaluate_results(demo_run, progress=False)  # not written: demo_run is shared
    test = results.splits["test"]
    model = test.model.full.ndcg[10]
    assert model > test.baselines["most_popular"].full.ndcg[10]
    assert model > test.baselines["markov"].full.ndcg[10]
    assert test.model.full.hr[10] > test.baselines["markov"].full.hr[10]
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert abs(metrics["best_valid_ndcg"] - results.splits["valid"].model.full.ndcg[10]) < 0.01


def test_shuffled_targets_score_like_popularity(demo_run):
    run = load_run(demo_run)
    data_dir = run.info.data_dir
    train = read_split(data_dir, "train").items
    vocabulary = vocabulary_size(run.schema)
    eval_set = make_eval_set("test", read_split(data_dir, "test").items, item_counts(train, vocabulary), 20, 0)
    score = model_scorer(run.model, run.session_length)
    true = evaluate_scorer(score, eval_set, [10]).full
    shuffled = EvalSet(
        "shuffled", eval_set.inputs, np.random.default_rng(0).permutation(eval_set.targets), eval_set.negatives, eval_set.known
    )
    scrambled = evaluate_scorer(score, shuffled, [10]).full
    popular = evaluate_scorer(MostPopular(train, vocabulary).score, shuffled, [10]).full
    assert scrambled.ndcg[10] < 0.6 * true.ndcg[10]
    # a shuffle keeps only popularity: the model can do no better than MostPopular there
    assert scrambled.ndcg[10] <= popular.ndcg[10] + 0.02
