"""The built BERT4Rec module and its masking, inspected on the real T4R objects."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import GELUActivation

from t4r_app.config import ModelConfig
from t4r_app.model.architecture import build_model, item_schema, max_sequence_length, vocabulary_size
from t4r_app.model.masking import Bert4RecMasking
from t4r_app.model.saved_run import load_schema


@pytest.fixture(scope="module")
def schema(tiny_data):
    return item_schema(load_schema(tiny_data / "train"))


def _bert(model):
    return model.heads[0].body[1].transformer


def test_built_model_has_the_default_settings(schema):
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
        assert layer.attention.self.dropout.p == 0.1  # attention probabilities
        assert layer.attention.output.dropout.p == 0.1 and layer.output.dropout.p == 0.1  # hidden states
    assert bert.embeddings.dropout.p == 0.1
    # positions for max_seq_length items plus the [MASK] appended at inference
    assert bert.embeddings.position_embeddings.num_embeddings >= max_sequence_length(schema) + 1
    assert bert.embeddings.position_embeddings.embedding_dim == 64
    table = model.heads[0].body[0].to_merge["categorical_module"].item_embedding_table
    assert table.num_embeddings == vocabulary_size(schema) and table.embedding_dim == 64
    task = model.heads[0].prediction_task_dict["next-item"]
    assert task.weight_tying and task.item_embedding_table is table  # output layer = item embeddings
    # by default no reference transform (measured: no gain), no bias on a small catalogue
    # (output_bias auto), and the seen-item weight
    assert isinstance(task.transform, torch.nn.Identity) and task.output_bias is None
    assert task.seen_weight.shape == ()


def test_the_reference_head_and_the_seen_weight_follow_the_config(schema):
    config = ModelConfig(output_transform=True, output_bias=True, seen_item_weight=False)
    task = build_model(schema, config).heads[0].prediction_task_dict["next-item"]
    dense, _, norm = task.transform  # dense + GELU + LayerNorm
    assert (dense.in_features, dense.out_features) == (64, 64) and isinstance(norm, torch.nn.LayerNorm)
    assert task.output_bias.shape == (vocabulary_size(schema),) and task.seen_weight is None


def test_sasrec_is_a_causal_gpt2_with_the_configured_settings(schema):
    config = ModelConfig(architecture="sasrec", d_model=48, n_layers=3, n_heads=4, intermediate_size=96,
                         hidden_dropout=0.05, attention_dropout=0.3)
    gpt2 = _bert(build_model(schema, config))
    assert type(gpt2).__name__ == "GPT2Model" and len(gpt2.h) == 3
    block = gpt2.h[0]
    assert block.attn.num_heads == 4 and block.mlp.c_fc.nf == 96  # feed-forward width from the config
    assert block.attn.attn_dropout.p == 0.3 and block.attn.resid_dropout.p == 0.05 and gpt2.drop.p == 0.05


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


def test_bernoulli_masking_is_t4rs_rule():
    torch.manual_seed(0)
    items = torch.randint(3, 100, (2000, 40))
    masking = Bert4RecMasking(hidden_size=8, mlm_probability=0.2, exact_count=False)
    masked = _targets_per_row(masking, items, training=True)
    # T4R also masks one random position per row on top: p + (1 - p) / length
    assert abs(masked.float().mean().item() - (0.2 + 0.8 / 40)) < 0.01


def test_exact_count_masking_masks_round_n_p_items_of_each_window():
    torch.manual_seed(0)
    lengths = torch.tensor([2, 3, 5, 8, 13, 40, 40])
    items = torch.zeros((len(lengths), 40), dtype=torch.long)
    for row, length in enumerate(lengths):
        items[row, :length] = torch.randint(3, 100, (int(length),))
    masked = _targets_per_row(Bert4RecMasking(hidden_size=8, mlm_probability=0.2), items, training=True)
    # round(n * p) (half to even), at least one, never the whole window (something must stay visible)
    assert masked.sum(dim=1).tolist() == [1, 1, 1, 2, 3, 8, 8]
    assert not masked[items == 0].any()
    capped = Bert4RecMasking(hidden_size=8, mlm_probability=0.5, max_predictions=4)
    assert _targets_per_row(capped, items, training=True).sum(dim=1).tolist() == [1, 2, 2, 4, 4, 4, 4]
    # fresh positions each call: the same window is masked differently
    again = _targets_per_row(Bert4RecMasking(hidden_size=8, mlm_probability=0.2), items, training=True)
    assert not torch.equal(masked[5:], again[5:])


def test_inference_appends_mask_and_hides_padding_from_attention():
    masking = Bert4RecMasking(hidden_size=8)
    items = torch.tensor([[5, 6, 7, 0, 0], [5, 0, 0, 0, 0]])
    masked = _targets_per_row(masking, items, training=False, testing=False)
    assert masked.shape == (2, 6)
    assert masked[0].tolist() == [False, False, False, True, False, False]
    assert masked[1].tolist() == [False, True, False, False, False, False]
    assert masking.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]]
