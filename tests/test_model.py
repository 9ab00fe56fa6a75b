"""The built BERT4Rec module and its masking, inspected on the real T4R objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.activations import GELUActivation

from t4r_app.config import ModelConfig
from t4r_app.masking import Bert4RecMasking
from t4r_app.model import build_model, item_schema, max_sequence_length, vocabulary_size
from t4r_app.run_files import load_schema
from t4r_app.scoring import score_batch
from t4r_app.sequences_io import read_split


@pytest.fixture(scope="module")
def schema(tiny_data):
    return item_schema(load_schema(tiny_data / "train"))


def _bert(model):
    return model.heads[0].body[1].transformer


def test_built_model_has_the_papers_settings(schema):
    torch.manual_seed(0)
    model = build_model(schema, ModelConfig())
    bert = _bert(model)
    layers = bert.encoder.layer
    assert len(layers) == 2
    for layer in layers:
        assert layer.attention.self.num_attention_heads == 2
        assert layer.attention.self.attention_head_size == 32
        assert layer.intermediate.dense.in_features == 64 and layer.intermediate.dense.out_features == 256
        assert isinstance(layer.intermediate.intermediate_act_fn, GELUActivation)
        assert layer.attention.self.dropout.p == 0.2  # attention probabilities
        assert layer.attention.output.dropout.p == 0.2 and layer.output.dropout.p == 0.2  # hidden states
    assert bert.embeddings.dropout.p == 0.2
    # positions for max_seq_length items plus the [MASK] appended at inference
    assert bert.embeddings.position_embeddings.num_embeddings >= max_sequence_length(schema) + 1
    assert bert.embeddings.position_embeddings.embedding_dim == 64
    table = model.heads[0].body[0].to_merge["categorical_module"].item_embedding_table
    assert table.num_embeddings == vocabulary_size(schema) and table.embedding_dim == 64
    task = model.heads[0].prediction_task_dict["next-item"]
    assert task.weight_tying and task.item_embedding_table is table  # output layer = item embeddings


def test_settings_reach_the_module_when_changed(schema):
    config = ModelConfig(d_model=48, n_layers=3, n_heads=4, intermediate_size=96, hidden_dropout=0.05, attention_dropout=0.3)
    bert = _bert(build_model(schema, config))
    assert len(bert.encoder.layer) == 3
    layer = bert.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 4 and layer.intermediate.dense.out_features == 96
    assert layer.attention.self.dropout.p == 0.3 and layer.output.dropout.p == 0.05


def _targets_per_row(masking, items, **mode):
    info = masking.compute_masked_targets(items, **mode)
    return info.schema


def test_forced_last_item_share_is_respected():
    torch.manual_seed(0)
    rows, length = 4000, 30
    items = torch.randint(3, 100, (rows, length))
    items[::2, 20:] = 0  # half the rows are padded after 20 items
    masking = Bert4RecMasking(hidden_size=8, mlm_probability=0.5, last_item_share=0.3)
    masked = _targets_per_row(masking, items, training=True)
    last = (items != 0).sum(dim=1) - 1
    only_last = (masked.sum(dim=1) == 1) & masked[torch.arange(rows), last]
    # with half the items masked, MLM alone almost never masks the last item only
    assert abs(only_last.float().mean().item() - 0.3) < 0.03
    assert not masked[items == 0].any()
    assert (masked.sum(dim=1) >= 1).all()


def test_without_forcing_mlm_masks_about_the_probability():
    torch.manual_seed(0)
    items = torch.randint(3, 100, (2000, 40))
    masked = _targets_per_row(Bert4RecMasking(hidden_size=8, mlm_probability=0.2), items, training=True)
    # T4R also masks one random position per row on top: p + (1 - p) / length
    assert abs(masked.float().mean().item() - (0.2 + 0.8 / 40)) < 0.01


def test_inference_appends_mask_and_hides_padding_from_attention():
    masking = Bert4RecMasking(hidden_size=8)
    items = torch.tensor([[5, 6, 7, 0, 0], [5, 0, 0, 0, 0]])
    masked = _targets_per_row(masking, items, training=False, testing=False)
    assert masked.shape == (2, 6)
    assert masked[0].tolist() == [False, False, False, True, False, False]
    assert masked[1].tolist() == [False, True, False, False, False, False]
    assert masking.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]]


def test_scores_do_not_depend_on_padding(schema, tiny_data):
    torch.manual_seed(0)
    model = build_model(schema, ModelConfig(d_model=32, intermediate_size=64)).eval()
    sessions = read_split(tiny_data, "valid").items
    short = sessions.padded(0, 32, 8)
    wide = np.zeros((32, 19), dtype=np.int64)
    wide[:, :8] = short
    assert np.allclose(score_batch(model, short), score_batch(model, wide), atol=1e-5)


def test_evaluation_mode_never_sees_the_target(schema, tiny_data):
    """T4R's evaluation masks the last item; replacing it must not change any score."""
    torch.manual_seed(0)
    model = build_model(schema, ModelConfig(d_model=32, intermediate_size=64)).eval()
    items = read_split(tiny_data, "valid").items
    batch = torch.as_tensor(items.padded(0, 64, 20))
    lengths = (batch != 0).sum(dim=1)
    swapped = batch.clone()
    swapped[torch.arange(64), lengths - 1] = 3 + (batch[torch.arange(64), lengths - 1] - 2) % 50
    assert not torch.equal(batch, swapped)
    with torch.no_grad():
        original = model({"item_id-list": batch}, testing=True)
        changed = model({"item_id-list": swapped}, testing=True)
    assert torch.equal(original["labels"], batch[torch.arange(64), lengths - 1])
    assert torch.allclose(original["predictions"], changed["predictions"], atol=1e-6)
