"""BERT4Rec (or SASRec) assembled from Transformers4Rec blocks, sized by the dataset's schema.

``item_id-list`` is the only input: its schema carries the vocabulary (``int_domain.max``
is the reserved [MASK] id, so the embedding table covers every id) and the longest
sequence (``value_count.max``). Timestamps stay out on purpose: a target's own timestamp
would be visible at evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers4rec.torch as tr
from merlin.schema import Schema, Tags
from transformers4rec.config.transformer import BertConfig, GPT2Config
from transformers4rec.torch.masking import CausalLanguageModeling, MaskSequence

from t4r_app.config import ModelConfig
from t4r_app.model.auto_settings import output_bias_choice, sampled_softmax_choice
from t4r_app.model.head import NextItemHead
from t4r_app.model.head_sampling import SampledLoss, SharedNegatives
from t4r_app.model.item_features import ItemFeatures
from t4r_app.model.masking import Bert4RecMasking
from t4r_app.model.title_embedding import TitledItemEmbedding, initialise_from_titles
from t4r_app.model.validation_metrics import NDCGAt, RecallAt
from workflow.columns import ITEM_LIST, PADDING_ID, movie_ids

MONITOR_K = 10  # early stopping and the Trainer's metrics watch NDCG@10
MODEL_LABELS = {"bert4rec": "BERT4Rec", "sasrec": "SASRec"}  # how reports, logs and plots name each architecture


def model_label(model: ModelConfig) -> str:
    return MODEL_LABELS.get(model.architecture, model.architecture)


def trainer_metric(name: str, k: int = MONITOR_K) -> str:
    """How T4R's Trainer names a validation metric of the next-item head (e.g. ``ndcg``, ``recall``)."""
    return f"eval_/next-item/{name}_at_{k}"


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


def _transformer_sizes(model: ModelConfig, max_length: int) -> dict:
    return {
        "d_model": model.d_model,
        "n_head": model.n_heads,
        "n_layer": model.n_layers,
        "total_seq_length": max_length,
        "hidden_act": model.hidden_act,
        "initializer_range": model.initializer_range,
        "layer_norm_eps": model.layer_norm_eps,
        "dropout": model.hidden_dropout,
    }


def bert_config(model: ModelConfig, max_length: int) -> BertConfig:
    # BertConfig.build() passes `dropout`, which Hugging Face's BertConfig ignores, and does
    # not expose the feed-forward width; the keyword arguments below reach the HF config.
    return BertConfig.build(
        **_transformer_sizes(model, max_length),
        intermediate_size=model.intermediate_size,
        hidden_dropout_prob=model.hidden_dropout,
        attention_probs_dropout_prob=model.attention_dropout,
    )


def gpt2_config(model: ModelConfig, max_length: int) -> GPT2Config:
    # GPT2Config.build() fixes the feed-forward width at 4 x d_model and uses one dropout for
    # all three places, without a way to pass others: the HF fields are set after it.
    config = GPT2Config.build(**_transformer_sizes(model, max_length))
    config.n_inner = model.intermediate_size
    config.attn_pdrop = model.attention_dropout
    return config


def sequence_masking(model: ModelConfig) -> MaskSequence:
    """BERT4Rec: masked items, both directions. SASRec: every next item, left to right only."""
    if model.architecture == "sasrec":
        return CausalLanguageModeling(hidden_size=model.d_model, padding_idx=PADDING_ID, train_on_last_item_seq_only=False)
    return Bert4RecMasking(
        hidden_size=model.d_model,
        padding_idx=PADDING_ID,
        mlm_probability=model.mask_probability,
        last_item_share=model.last_item_mask_share,
        exact_count=model.masking == "exact",
        max_predictions=model.max_predictions,
    )


def _use_titles(inputs: tr.TabularSequenceFeatures, model: ModelConfig, features: ItemFeatures | None) -> None:
    """Put the titles into the item table (model.title_embeddings); before the head ties itself to it."""
    if model.title_embeddings == "off" or features is None or features.titles is None:
        return
    tables = inputs.to_merge["categorical_module"].embedding_tables
    if model.title_embeddings == "init":
        initialise_from_titles(tables[ITEM_LIST].weight, features.titles)
    else:
        tables[ITEM_LIST] = TitledItemEmbedding(tables[ITEM_LIST], features.titles, features.trained)


def build_model(
    schema: Schema, model: ModelConfig, top_ks: list[int] | None = None, features: ItemFeatures | None = None
) -> tr.Model:
    """Item embeddings -> Transformer (bidirectional BERT or causal GPT-2) -> tied full-softmax head.

    ``features`` (item_features) adds the titles and the items that may not be recommended;
    without them (runs from before titles) every id is scored.
    """
    if model.title_embeddings == "feature" and (features is None or features.titles is None):
        raise ValueError("model.title_embeddings=feature needs the items' title vectors (ItemFeatures.titles)")
    items = item_schema(schema)
    max_length = max_sequence_length(items)
    masking = sequence_masking(model)
    inputs = tr.TabularSequenceFeatures.from_schema(
        items,
        max_sequence_length=max_length,
        aggregation="concat",
        masking=masking,
        embedding_dim_default=model.d_model,
    )
    _use_titles(inputs, model, features)
    config = gpt2_config(model, max_length) if model.architecture == "sasrec" else bert_config(model, max_length)
    body = tr.SequentialBlock(inputs, tr.TransformerBlock(config, masking=masking))
    ks = sorted(set(top_ks or []) | {MONITOR_K})
    vocabulary = vocabulary_size(items)
    bias = output_bias_choice(model, len(movie_ids(vocabulary))).value
    task = NextItemHead(
        d_model=model.d_model,
        vocabulary=vocabulary,
        transform=model.output_transform,
        bias=bias is not False,
        seen_item_weight=model.seen_item_weight,
        layer_norm_eps=model.layer_norm_eps,
        metrics=[NDCGAt(top_ks=ks), RecallAt(top_ks=ks)],
        scorable=None if features is None else features.scorable,
        sampled_loss=sampled_loss(model, vocabulary, features),
    )
    if bias == "popularity" and features is not None and features.counts is not None:
        with torch.no_grad():
            task.output_bias.copy_(log_popularity(features.counts, untrained_at_mean=model.title_embeddings == "feature"))
    return tr.Model(tr.Head(body, task, inputs=inputs))


def sampled_loss(model: ModelConfig, vocabulary: int, features: ItemFeatures | None) -> SampledLoss | None:
    """The training loss over shared negatives, when the config asks for one and the training counts are at hand."""
    candidates = movie_ids(vocabulary)
    size = sampled_softmax_choice(model, len(candidates)).value
    if not size or features is None or features.counts is None:
        return None  # full softmax, or a model rebuilt for scoring only
    if features.scorable is not None:
        candidates = candidates[features.scorable[candidates]]
    negatives = SharedNegatives(candidates, features.counts, size, by_popularity=model.negative_sampler == "popularity")
    return SampledLoss(negatives, model.loss, model.gbce_t)


def log_popularity(counts: np.ndarray, untrained_at_mean: bool = False) -> torch.Tensor:
    """log of each id's smoothed training frequency: a softmax over it is MostPopular's ranking.

    ``untrained_at_mean`` (title features) starts every id without training interactions at
    the trained ids' mean instead: its title, not a count of zero, should place a new movie.
    Without titles nothing speaks for such an item, and it starts last, as MostPopular has it.
    """
    smoothed = np.asarray(counts, dtype=np.float64) + 1.0
    logs = np.log(smoothed / smoothed.sum())
    trained = np.asarray(counts) > 0
    if untrained_at_mean and trained.any():
        logs[~trained] = logs[trained].mean()
    return torch.as_tensor(logs, dtype=torch.float32)
