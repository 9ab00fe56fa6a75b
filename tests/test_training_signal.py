"""More signal per step: sliding windows, per-batch padding, the seen-item weight, and SASRec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t4r_app.config import ModelConfig
from t4r_app.data.item_sequences import ItemSequences, read_split
from t4r_app.model.architecture import build_model, item_schema
from t4r_app.model.head import seen_keys
from t4r_app.model.inference import inference_length, next_item_scores
from t4r_app.model.saved_run import load_schema
from t4r_app.data.split_views import training_histories
from t4r_app.train.windows import WindowDataset, WindowLoader, window_bounds


@pytest.fixture(scope="module")
def schema(tiny_data):
    return item_schema(load_schema(tiny_data / "train"))


def _small_model(schema, **settings) -> torch.nn.Module:
    """A 32-wide model with ``settings``, built after seeding: the same weights every time."""
    torch.manual_seed(0)
    return build_model(schema, ModelConfig(d_model=32, intermediate_size=64, **settings))


def test_windows_cover_every_item_and_respect_the_length():
    lengths = np.array([1, 2, 5, 10, 11, 23])
    rows, start, stop = window_bounds(lengths, window=5, stride=3)
    assert (stop - start <= 5).all() and (stop - start >= 2).all()
    for row, length in enumerate(lengths):
        mine = rows == row
        if length < 2:
            assert not mine.any()  # nothing to mask and see
            continue
        covered = np.zeros(length, dtype=bool)
        for a, b in zip(start[mine], stop[mine]):
            covered[a:b] = True
        assert covered.all(), row
        assert stop[mine].max() == length  # the most recent window is always there
    # stride 0: only the most recent window of each row
    rows, start, stop = window_bounds(lengths, window=5, stride=0)
    assert rows.tolist() == [1, 2, 3, 4, 5] and stop.tolist() == [2, 5, 10, 11, 23]


def test_training_histories_hold_everything_before_the_validation_target(tiny_data):
    histories = training_histories(tiny_data)
    valid = read_split(tiny_data, "valid").items
    # Validation also holds sequences too short to train on (n < 5 items, a validation row of
    # n - 1 < 4): leave them out, and the rest line up with the training histories in order.
    trained = valid.lengths >= 4
    assert (~trained).any()
    valid = ItemSequences.from_lists([valid.row(row).tolist() for row in np.flatnonzero(trained)])
    # leave-one-out: a history is its sequence without the last two items, uncapped by the window
    assert len(histories) == len(valid)
    assert histories.lengths.max() > 20  # longer than the window of train/
    inputs, targets = valid.split_last()
    for row in range(len(valid)):
        history = histories.row(row)
        assert len(history) >= len(inputs.row(row))
        assert np.array_equal(history[len(history) - len(inputs.row(row)) :], inputs.row(row))


def test_loader_pads_each_batch_to_its_own_longest_window():
    windows = ItemSequences.from_lists([[3, 4], [5, 6, 7], [8, 9, 10, 11, 12], [3, 4, 5]])
    loader = WindowLoader(WindowDataset(windows, copies=2), batch_size=3, seed=0)
    assert len(loader.dataset) == 8 and len(loader) == 3 and loader._batch_size == 3
    seen = []
    for inputs, targets in loader:
        batch = inputs["item_id-list"]
        lengths = (batch != 0).sum(dim=1)
        assert batch.shape[1] == lengths.max() and targets is None
        seen += [tuple(row[row != 0].tolist()) for row in batch]
    assert sorted(seen) == sorted([tuple(windows.row(i)) for i in range(4)] * 2)


def test_seen_items_counts_only_what_the_prediction_may_see():
    items = torch.tensor([[5, 6, 7, 0], [8, 8, 9, 4]])
    visible = items != 0
    visible[0, 1] = False  # a masked position: its item is the target, not seen
    rows, cutoff = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 3])
    keys = seen_keys(items, visible, rows, cutoff, vocabulary=10, padding_idx=0)
    seen = [[int(key) % 10 for key in keys if key // 10 == target] for target in range(3)]
    assert seen == [[5, 7], [8], [4, 8, 9]]  # item 8 twice in row 1: counted once


@pytest.mark.parametrize("architecture", ["bert4rec", "sasrec"])
def test_scores_do_not_depend_on_padding(schema, tiny_data, architecture):
    model = _small_model(schema, architecture=architecture).eval()
    sessions = read_split(tiny_data, "valid").items
    short = sessions.padded(0, 32, 8)
    wide = np.zeros((32, 19), dtype=np.int64)
    wide[:, :8] = short
    assert np.allclose(next_item_scores(model, short), next_item_scores(model, wide), atol=1e-5)


@pytest.mark.parametrize("architecture", ["bert4rec", "sasrec"])
def test_evaluation_never_sees_the_target(schema, tiny_data, architecture):
    """BERT4Rec masks the target, SASRec's attention is causal: replacing it must change no score."""
    model = _small_model(schema, architecture=architecture).eval()
    batch = torch.as_tensor(read_split(tiny_data, "valid").items.padded(0, 64, 20))
    lengths = (batch != 0).sum(dim=1)
    swapped = batch.clone()
    swapped[torch.arange(64), lengths - 1] = 3 + (batch[torch.arange(64), lengths - 1] - 2) % 50
    assert not torch.equal(batch, swapped)
    with torch.no_grad():
        original = model({"item_id-list": batch}, testing=True)
        changed = model({"item_id-list": swapped}, testing=True)
    assert torch.equal(original["labels"], batch[torch.arange(64), lengths - 1])
    assert torch.allclose(original["predictions"], changed["predictions"], atol=1e-6)


def _seen_weight(model, value: float) -> None:
    head = model.heads[0].prediction_task_dict["next-item"]
    with torch.no_grad():
        head.seen_weight.fill_(value)


@pytest.mark.parametrize("architecture", ["bert4rec", "sasrec"])
@pytest.mark.parametrize("weight", [1000.0, -1000.0])
def test_evaluates_path_gives_no_score_that_depends_on_the_target(schema, tiny_data, architecture, weight):
    """With a seen weight that dwarfs everything, a target counted as seen anywhere on
    ``evaluate``'s path (the target taken off, then inference) would move its scores by 1000."""
    from t4r_app.evaluate.protocol import make_eval_set, model_scorer

    model = _small_model(schema, architecture=architecture).eval()
    _seen_weight(model, weight)
    sequences = read_split(tiny_data, "valid").items
    last = sequences.offsets[1:] - 1
    other = sequences.values.copy()
    other[last] = 3 + (other[last] - 2) % 50  # another movie as every target
    assert (other[last] != sequences.values[last]).all()
    score = model_scorer(model, inference_length(ModelConfig(architecture=architecture), 20))
    popularity = np.ones(int(sequences.values.max()) + 2)
    scores = [
        score(make_eval_set("valid", ItemSequences(values, sequences.offsets), popularity, 5, 0).inputs, slice(0, 64))
        for values in (sequences.values, other)
    ]
    assert np.array_equal(scores[0], scores[1])


@pytest.mark.parametrize("weight", [1000.0, -1000.0])
def test_sasrec_training_never_counts_a_positions_own_target_as_seen(schema, weight):
    """All items distinct: no target is ever seen, so the seen weight must leave every target's logit alone."""
    model = _small_model(schema, architecture="sasrec").train()
    batch = torch.tensor([[3, 4, 5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14, 15, 16]])
    outputs = []
    for value in (0.0, weight):
        _seen_weight(model, value)
        torch.manual_seed(1)  # the same dropout both times
        outputs.append(model({"item_id-list": batch}, training=True))
    labels = outputs[0]["labels"]
    rows = torch.arange(len(labels))
    without, with_weight = (output["predictions"][rows, labels] for output in outputs)
    assert torch.allclose(without, with_weight)
    # ...while the items each position has seen do move by the weight (the check can tell).
    # The first target (4, at position 0) has seen item 3.
    moved = outputs[1]["predictions"][0, 3] - outputs[0]["predictions"][0, 3]
    assert float(moved) == pytest.approx(weight, rel=1e-4)


def test_sasrec_training_predicts_every_next_item(schema):
    model = _small_model(schema, architecture="sasrec", output_bias=True).train()
    batch = torch.tensor([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12]])
    output = model({"item_id-list": batch}, training=True)
    assert output["labels"].tolist() == [4, 5, 6, 8, 9, 10, 11, 12]
    output["loss"].backward()
    head = model.heads[0].prediction_task_dict["next-item"]
    assert head.seen_weight.grad is not None and head.output_bias.grad is not None


def test_a_masked_position_counts_the_whole_unmasked_window_as_seen(schema):
    """BERT4Rec's context runs both ways: items after a masked position are seen too."""
    model = _small_model(schema).train()
    head = model.heads[0].prediction_task_dict["next-item"]
    with torch.no_grad():
        head.seen_weight.fill_(-1000.0)  # a seen item scores far below every other
    batch = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    output = model({"item_id-list": batch}, training=True)
    masked = head.masking.mask_schema[0]
    for logits, target in zip(output["predictions"], output["labels"]):
        unmasked = batch[0][~masked].tolist()
        assert (logits[unmasked] < -500).all() and logits[target] > -500


def test_length_buckets_group_similar_windows_and_keep_every_window_once():
    rng = np.random.default_rng(0)
    windows = ItemSequences.from_lists([[3] * int(n) for n in np.clip(rng.geometric(0.3, 500) + 1, 2, 40)])
    plain = WindowLoader(WindowDataset(windows), batch_size=16, seed=1)
    bucketed = WindowLoader(WindowDataset(windows), batch_size=16, seed=1, length_buckets=8)
    widths = {}
    for name, loader in (("plain", plain), ("bucketed", bucketed)):
        batches = [inputs["item_id-list"] for inputs, _ in loader]
        assert sum(len(b) for b in batches) == 500
        assert sorted(n for b in batches for n in (b != 0).sum(dim=1).tolist()) == sorted(windows.lengths.tolist())
        widths[name] = sum(b.numel() for b in batches)
    assert widths["bucketed"] < 0.7 * widths["plain"]  # far less padding
    assert [len(inputs["item_id-list"]) for inputs, _ in bucketed][-1] == 500 % 16  # the short batch last


def test_validation_rows_run_shortest_first():
    windows = ItemSequences.from_lists([[3, 4, 5, 6], [3, 4], [3, 4, 5], [3, 4]])
    loader = WindowLoader(WindowDataset(windows), batch_size=2, seed=0, shuffle=False)
    assert [inputs["item_id-list"].shape[1] for inputs, _ in loader] == [2, 4]
