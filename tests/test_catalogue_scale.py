"""Large catalogues: the sparse seen-item term, the shared-negative losses, the popularity start,
validation metrics without one-hot tables, and the settings training picks from the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers4rec.torch.ranking_metric import NDCGAt as T4RNDCGAt
from transformers4rec.torch.ranking_metric import RecallAt as T4RRecallAt

from t4r_app.config import ModelConfig, load_config
from t4r_app.errors import ConfigError
from t4r_app.model import auto_settings
from t4r_app.model.architecture import build_model, item_schema, log_popularity, vocabulary_size
from t4r_app.model.head_sampling import SampledLoss, SharedNegatives
from t4r_app.model.inference import next_item_scores
from t4r_app.model.item_features import ItemFeatures
from t4r_app.model.saved_run import load_schema
from t4r_app.model.validation_metrics import NDCGAt, RecallAt
from workflow.columns import FIRST_MOVIE_ID, ITEM_LIST, movie_ids


@pytest.fixture(scope="module")
def schema(tiny_data):
    return item_schema(load_schema(tiny_data / "train"))


def _features(vocabulary: int, seed: int = 0) -> ItemFeatures:
    counts = np.zeros(vocabulary, dtype=np.int64)
    counts[FIRST_MOVIE_ID:-1] = np.random.default_rng(seed).integers(1, 1000, vocabulary - FIRST_MOVIE_ID - 1)
    return ItemFeatures(counts > 0, np.ones(vocabulary, dtype=bool), None, counts)


def _model(schema, features=None, **settings):
    torch.manual_seed(0)
    return build_model(schema, ModelConfig(d_model=32, intermediate_size=64, **settings), features=features)


def _head(model):
    return model.heads[0].prediction_task_dict["next-item"]


BATCH = torch.tensor([[3, 4, 5, 6, 4, 0], [7, 8, 9, 10, 11, 12]])  # item 4 twice in row 0


@pytest.mark.parametrize("architecture", ["bert4rec", "sasrec"])
def test_the_seen_weight_lands_exactly_on_the_seen_items(schema, architecture):
    """Sparse addition equals the dense definition: every visible item of the row gets the weight once."""
    model = _model(schema, architecture=architecture).eval()
    head = _head(model)
    with torch.no_grad():
        plain = model({ITEM_LIST: BATCH})
        head.seen_weight.fill_(-2.5)
        weighted = model({ITEM_LIST: BATCH})
    difference = weighted - plain
    for row, items in enumerate(BATCH.tolist()):
        seen = sorted({item for item in items if item})
        changed = torch.nonzero(difference[row].abs() > 1e-4).flatten().tolist()
        assert changed == seen
        assert torch.allclose(difference[row, seen], torch.tensor(-2.5), atol=1e-4)


def test_a_sample_covering_the_catalogue_gives_the_full_softmax_loss(schema):
    """Uniform draws of every movie: the sampled softmax (logQ a constant) is the full softmax over the movies."""
    vocabulary = vocabulary_size(schema)
    features = _features(vocabulary)
    model = _model(schema, features, sampled_softmax=50 * vocabulary, negative_sampler="uniform",
                   output_bias="popularity").train()
    head = _head(model)
    with torch.no_grad():
        head.seen_weight.fill_(-1.5)
    torch.manual_seed(1)
    sampled = model({ITEM_LIST: BATCH}, training=True)
    assert sampled["predictions"].shape[1] == 1 + len(movie_ids(vocabulary))  # every movie drawn
    # The same masking again, scored over the whole vocabulary, restricted to movies.
    head.sampled_loss, kept = None, head.sampled_loss
    torch.manual_seed(1)
    full = model({ITEM_LIST: BATCH}, training=True)
    head.sampled_loss = kept
    movies = torch.as_tensor(movie_ids(vocabulary))
    logits = full["predictions"][:, movies]
    targets = torch.searchsorted(movies, full["labels"])
    assert torch.allclose(sampled["loss"], F.cross_entropy(logits, targets), atol=1e-4)


def test_popularity_sampling_draws_popular_items_more_and_corrects_for_it():
    counts = np.array([0, 0, 0, 1000, 10, 10, 0])
    negatives = SharedNegatives(np.arange(3, 6), counts, count=2, by_popularity=True)
    torch.manual_seed(0)
    draws = torch.cat([negatives.draw() for _ in range(300)])
    assert (draws == 3).sum() > 5 * (draws == 4).sum()
    assert set(draws.tolist()) <= {3, 4, 5}
    expected = 2 * (counts[3:6] + 1) / (counts[3:6] + 1).sum()
    assert np.allclose(negatives.log_expected[3:6].numpy(), np.log(expected), atol=1e-5)


def test_a_negative_equal_to_the_target_is_left_out():
    negatives = SharedNegatives(np.arange(3, 6), np.ones(7, dtype=np.int64), count=3, by_popularity=False)
    loss = SampledLoss(negatives)
    positive, negative = torch.zeros(2), torch.zeros(2, 3)
    _, logits = loss.loss(positive, negative, torch.tensor([3, 6]), torch.tensor([3, 4, 5]))
    assert torch.isinf(logits[0, 1]) and torch.isfinite(logits[1]).all()


def test_gbce_beta_spans_plain_bce_to_calibrated():
    negatives = SharedNegatives(np.arange(3, 1003), np.ones(1004, dtype=np.int64), count=100, by_popularity=False)
    assert SampledLoss(negatives, "gbce", gbce_t=0.0)._gbce_beta(100) == pytest.approx(1.0)
    assert SampledLoss(negatives, "gbce", gbce_t=1.0)._gbce_beta(100) == pytest.approx(100 / 999)


@pytest.mark.parametrize("settings", [
    {"architecture": "bert4rec"},
    {"architecture": "sasrec"},
    {"architecture": "bert4rec", "loss": "gbce", "negative_sampler": "uniform"},
])
def test_sampled_training_learns_and_scores_the_whole_catalogue(schema, settings):
    vocabulary = vocabulary_size(schema)
    model = _model(schema, _features(vocabulary), sampled_softmax=16, output_bias="popularity", **settings).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        output = model({ITEM_LIST: BATCH}, training=True)
        assert output["predictions"].shape[1] <= 17  # the target and at most 16 drawn items
        output["loss"].backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(float(output["loss"]))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert next_item_scores(model, BATCH.numpy()).shape == (2, vocabulary)


def test_a_popularity_bias_starts_the_model_at_most_popular(schema):
    vocabulary = vocabulary_size(schema)
    features = _features(vocabulary)
    # the five most popular movies each 3x as frequent as the next: far apart on the log scale
    ranked = np.random.default_rng(3).permutation(movie_ids(vocabulary))
    features.counts[ranked] = np.maximum(1, (1e6 * 0.3 ** np.arange(len(ranked))).astype(np.int64))
    model = _model(schema, features, output_bias="popularity", seen_item_weight=False)
    scores = next_item_scores(model, BATCH.numpy())
    top = np.argsort(-scores, axis=1)[:, :5]
    popular = np.argsort(-features.counts)[:5]
    assert (top == popular).all()
    assert torch.allclose(_head(model).output_bias, log_popularity(features.counts))
    unbiased = _head(_model(schema, features, output_bias=True)).output_bias
    assert torch.equal(unbiased, torch.zeros(vocabulary))


def test_rank_metrics_equal_t4r_one_hot_metrics():
    torch.manual_seed(0)
    scores, targets = torch.randn(300, 500), torch.randint(3, 499, (300,))
    scores[torch.arange(100), targets[:100]] += 3.0  # some targets near the top
    for theirs, ours in ((T4RNDCGAt, NDCGAt), (T4RRecallAt, RecallAt)):
        expected, actual = theirs(top_ks=[1, 5, 10, 20], labels_onehot=True), ours(top_ks=[1, 5, 10, 20])
        expected.update(scores, targets)
        actual.update(scores, targets)
        assert torch.allclose(expected.compute(), actual.compute())


def test_a_tie_with_the_target_counts_against_it():
    metric = RecallAt(top_ks=[1])
    metric.update(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([1]))
    assert float(metric.compute()) == 0.0


def test_auto_picks_the_loss_and_the_bias_by_catalogue_size_and_explicit_values_win():
    config = load_config(None, ["model.sampled_softmax=auto", "model.output_bias=auto"])
    small, choices = auto_settings.resolve(config, auto_settings.AUTO_FULL_SOFTMAX_MAX)
    assert small.model.sampled_softmax == 0 and small.model.output_bias is False
    assert {choice.key for choice in choices} == {"model.sampled_softmax", "model.output_bias"}
    assert all(choice.why for choice in choices)
    large, choices = auto_settings.resolve(config, 50_000)
    assert large.model.sampled_softmax == auto_settings.AUTO_SAMPLED_NEGATIVES and large.model.output_bias == "popularity"
    assert "50,000 movies" in choices[0].why
    explicit, choices = auto_settings.resolve(load_config(None, ["model.sampled_softmax=300", "model.output_bias=true"]), 50_000)
    assert explicit.model.sampled_softmax == 300 and explicit.model.output_bias is True and choices == []


def test_loss_settings_are_checked():
    with pytest.raises(ConfigError, match="uniformly"):
        load_config(None, ["model.loss=gbce", "model.negative_sampler=popularity"])
    with pytest.raises(ConfigError, match="model.sampled_softmax"):
        load_config(None, ["model.sampled_softmax=-5"])
    with pytest.raises(ConfigError, match="model.sampled_softmax"):
        load_config(None, ["model.sampled_softmax=many"])


def test_training_records_what_it_chose(tiny_run):
    info = json.loads((tiny_run / "run.json").read_text())
    config = load_config(tiny_run / "config.yaml")
    assert config.model.sampled_softmax != "auto"  # the saved config is the one that trained
    recorded = {choice["key"]: choice for choice in info["auto_choices"]}
    assert recorded["model.sampled_softmax"]["value"] == config.model.sampled_softmax
    assert recorded["model.sampled_softmax"]["why"]


def test_an_untrained_item_starts_last_unless_a_title_can_place_it():
    counts = np.array([0, 0, 0, 50, 5, 0, 1])
    plain = log_popularity(counts)
    assert plain[5] == plain.min() and plain[3] > plain[4] > plain[6] > plain[5]
    titled = log_popularity(counts, untrained_at_mean=True)
    assert torch.allclose(titled[5], titled[[3, 4, 6]].mean()) and torch.equal(titled[[3, 4, 6]], plain[[3, 4, 6]])
