"""Settings that follow the data where the config says ``auto``: each choice with its reason.

Training resolves them once (``resolve``), saves the resolved config with the run, records
every choice and why in ``run.json`` and prints it on its first lines; explicit values
always win. ``build_model`` applies the same rule to a config that still says ``auto``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from t4r_app.config import AppConfig, ModelConfig

# Up to this many movies the full softmax is cheap next to the Transformer (measured with
# `make bench-train`: its share of the step grows with the catalogue) and exact, so it is kept.
AUTO_FULL_SOFTMAX_MAX = 8_192
# Above it, this many shared negatives a step; Klenitskiy & Vasilev (2023) found a few
# thousand sampled negatives as good as the full softmax for SASRec.
AUTO_SAMPLED_NEGATIVES = 2_048


# The reason of a value the config gave outright: not a choice, so not recorded.
EXPLICIT = "set in the config"


@dataclass(frozen=True)
class Choice:
    key: str
    value: object
    why: str


def sampled_softmax_choice(model: ModelConfig, movies: int) -> Choice:
    key = "model.sampled_softmax"
    if model.sampled_softmax != "auto":
        return Choice(key, model.sampled_softmax, EXPLICIT)
    if movies <= AUTO_FULL_SOFTMAX_MAX:
        return Choice(key, 0, f"{movies:,} movies <= {AUTO_FULL_SOFTMAX_MAX:,}: the full softmax is cheap and exact")
    return Choice(
        key,
        AUTO_SAMPLED_NEGATIVES,
        f"{movies:,} movies > {AUTO_FULL_SOFTMAX_MAX:,}: {AUTO_SAMPLED_NEGATIVES:,} shared negatives a step "
        "keep the step's cost off the catalogue size",
    )


def output_bias_choice(model: ModelConfig, movies: int) -> Choice:
    """The popularity start where the catalogue is large: there BERT4Rec otherwise spends its first
    epochs learning popularity (Video Games: validation NDCG@10 0.045 with it, 0.028 without); on
    MovieLens-100K (1,682 movies) the full softmax learns popularity in a few epochs and the start
    did not help (test NDCG@10 0.079 on one seed, against the 0.10 the default had without it)."""
    key = "model.output_bias"
    if model.output_bias != "auto":
        return Choice(key, model.output_bias, EXPLICIT)
    if movies <= AUTO_FULL_SOFTMAX_MAX:
        return Choice(key, False, f"{movies:,} movies <= {AUTO_FULL_SOFTMAX_MAX:,}: no bias (the full softmax learns popularity quickly)")
    return Choice(key, "popularity", f"{movies:,} movies > {AUTO_FULL_SOFTMAX_MAX:,}: a bias started at log popularity")


def resolve(config: AppConfig, movies: int) -> tuple[AppConfig, list[Choice]]:
    """``config`` with every ``auto`` replaced, and the choices that were made (explicit values left out)."""
    made = (sampled_softmax_choice(config.model, movies), output_bias_choice(config.model, movies))
    choices = [choice for choice in made if choice.why != EXPLICIT]
    model = config.model
    for choice in choices:
        model = dataclasses.replace(model, **{choice.key.split(".", 1)[1]: choice.value})
    return dataclasses.replace(config, model=model), choices
