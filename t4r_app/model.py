"""BERT4Rec assembled from Transformers4Rec blocks, sized by the dataset's schema.

``item_id-list`` is the only input: its schema carries the vocabulary (``int_domain.max``
is the reserved [MASK] id, so the embedding table covers every id) and the longest
sequence (``value_count.max``). Timestamps stay out on purpose: a target's own timestamp
would be visible at evaluation.
"""

from __future__ import annotations

import transformers4rec.torch as tr
from merlin.schema import Schema, Tags
from transformers4rec.config.transformer import BertConfig
from transformers4rec.torch.ranking_metric import NDCGAt, RecallAt

from t4r_app.config import ModelConfig
from t4r_app.masking import Bert4RecMasking
from workflow.ops import ITEM_LIST
from workflow.sequences import PADDING_ID

MONITOR_K = 10  # early stopping and the Trainer's metrics watch NDCG@10


def item_schema(schema: Schema) -> Schema:
    items = schema.select_by_tag(Tags.ITEM_ID)
    if items.column_names != [ITEM_LIST]:
        raise ValueError(f"expected one item-id list column '{ITEM_LIST}', the schema has {items.column_names}")
    return items


def max_sequence_length(schema: Schema) -> int:
    return int(schema[ITEM_LIST].properties["value_count"]["max"])


def vocabulary_size(schema: Schema) -> int:
    """Ids 0..mask id inclusive."""
    return int(schema[ITEM_LIST].int_domain.max) + 1


def bert_config(model: ModelConfig, max_length: int) -> BertConfig:
    # BertConfig.build() passes `dropout`, which Hugging Face's BertConfig ignores, and does
    # not expose the feed-forward width; the keyword arguments below reach the HF config.
    return BertConfig.build(
        d_model=model.d_model,
        n_head=model.n_heads,
        n_layer=model.n_layers,
        total_seq_length=max_length,
        hidden_act=model.hidden_act,
        initializer_range=model.initializer_range,
        layer_norm_eps=model.layer_norm_eps,
        dropout=model.hidden_dropout,
        intermediate_size=model.intermediate_size,
        hidden_dropout_prob=model.hidden_dropout,
        attention_probs_dropout_prob=model.attention_dropout,
    )


def build_model(schema: Schema, model: ModelConfig, top_ks: list[int] | None = None) -> tr.Model:
    """BERT4Rec: item embeddings -> bidirectional Transformer -> tied full-softmax head."""
    items = item_schema(schema)
    max_length = max_sequence_length(items)
    masking = Bert4RecMasking(
        hidden_size=model.d_model,
        padding_idx=PADDING_ID,
        mlm_probability=model.mask_probability,
        last_item_share=model.last_item_mask_share,
    )
    inputs = tr.TabularSequenceFeatures.from_schema(
        items,
        max_sequence_length=max_length,
        aggregation="concat",
        masking=masking,
        embedding_dim_default=model.d_model,
    )
    body = tr.SequentialBlock(inputs, tr.TransformerBlock(bert_config(model, max_length), masking=masking))
    ks = sorted(set(top_ks or []) | {MONITOR_K})
    task = tr.NextItemPredictionTask(
        weight_tying=True,
        metrics=[NDCGAt(top_ks=ks, labels_onehot=True), RecallAt(top_ks=ks, labels_onehot=True)],
    )
    return tr.Model(tr.Head(body, task, inputs=inputs))
