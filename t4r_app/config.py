"""The one typed configuration tree, loaded from YAML with ``key.sub=value`` overrides.

Every field has a default and a help string (``field(metadata={"help": ...})``). Loading
checks names and types and reports every problem with its dotted path, so a typo in a
YAML file or on the command line fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from t4r_app.errors import ConfigError


def _field(default: Any, help: str, **checks: Any) -> Any:
    metadata = {"help": help, **checks}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class PreprocessConfig:
    on_bad_record: Literal["fail", "skip"] = _field(
        "fail",
        "What to do with a bad record: 'fail' stops with the file, record number and problem; "
        "'skip' drops it and counts it by reason in stats.json.",
    )
    sequence_by: Literal["user", "record"] = _field(
        "user", "Build one sequence per user (all records joined) or one per record (session)."
    )
    drop_consecutive_duplicates: bool = _field(
        False, "Collapse runs of the same movie watched back to back into one interaction."
    )
    min_sequence_length: int = _field(
        5,
        "Train only on sequences at least this long (after de-duplication); 5 as in the BERT4Rec paper. "
        "Shorter ones are still evaluated wherever they have a validation or test target.",
        minimum=3,
    )
    max_seq_length: int = _field(
        50,
        "The model's window: evaluation and prediction read each session's most recent this-many items "
        "(BERT4Rec: minus one for [MASK]); training cuts longer histories into windows (train.window_stride).",
        minimum=2,
    )
    require_titles: bool = _field(
        True, "Reject records whose movie ids have no entry in the titles file (when one is given)."
    )
    rows_per_part: int = _field(
        2_000_000,
        "Interactions per parquet part written while streaming records; bounds the reader's memory.",
        minimum=1000,
    )
    partitions: int = _field(
        0,
        "Dask partitions for the workflow; 0 picks one per ~2M interactions.",
        minimum=0,
    )


@dataclass
class SplitConfig:
    # Keys renamed since: older configs (every saved config.yaml) still load, with a warning.
    renamed: typing.ClassVar[dict[str, str]] = {"protocol": "rule"}

    rule: Literal["leave_one_out", "temporal"] = _field(
        "leave_one_out",
        "leave_one_out: last item tests, second-to-last validates (BERT4Rec). temporal: global "
        "time cut-offs; items before a cut-off are the input, the first one after it the target.",
    )
    valid_cutoff: int | None = _field(
        None, "temporal: Unix time where validation targets start; null takes valid_quantile."
    )
    test_cutoff: int | None = _field(
        None, "temporal: Unix time where test targets start; null takes test_quantile."
    )
    valid_quantile: float = _field(
        0.8, "temporal: quantile of all interaction times used as valid_cutoff.", minimum=0.0, maximum=1.0
    )
    test_quantile: float = _field(
        0.9, "temporal: quantile of all interaction times used as test_cutoff.", minimum=0.0, maximum=1.0
    )


@dataclass
class DaskConfig:
    scheduler_address: str | None = _field(
        None, "Address of a running dask.distributed scheduler (tcp://host:8786) to run the workflow on."
    )
    n_workers: int = _field(
        0, "Start a LocalCluster with this many single-threaded workers; 0 runs in this process.", minimum=0
    )
    memory_limit: str = _field("auto", "Memory limit per LocalCluster worker (e.g. '4GB').")


# The masked-item training keys: only BERT4Rec reads them, so validate() refuses them changed for another architecture.
MASKING_KEYS = ("mask_probability", "masking", "max_predictions", "last_item_mask_share")


@dataclass
class ModelConfig:
    """The sequence model; sizes are the BERT4Rec paper's, training settings those measured on MovieLens-100K."""

    architecture: Literal["bert4rec", "sasrec"] = _field(
        "bert4rec",
        "bert4rec: bidirectional Transformer trained by masked-item prediction, [MASK] appended at "
        "inference. sasrec: causal (left-to-right GPT-2) Transformer trained to predict every next item; "
        "learns more per epoch and suits short sessions and tight training budgets.",
    )
    d_model: int = _field(64, "Width of item embeddings and Transformer hidden states.", minimum=8)
    n_layers: int = _field(2, "Transformer layers.", minimum=1)
    n_heads: int = _field(2, "Attention heads per layer (must divide d_model).", minimum=1)
    intermediate_size: int = _field(256, "Width of each layer's feed-forward network (4 x d_model).", minimum=8)
    hidden_act: Literal["gelu", "relu", "gelu_new", "silu"] = _field("gelu", "Feed-forward activation.")
    hidden_dropout: float = _field(0.1, "Dropout on embeddings and hidden states.", minimum=0.0, maximum=0.9)
    attention_dropout: float = _field(0.1, "Dropout on attention probabilities.", minimum=0.0, maximum=0.9)
    initializer_range: float = _field(0.02, "Standard deviation of the truncated-normal initialisation.", minimum=0.0)
    layer_norm_eps: float = _field(1e-12, "Epsilon of the layer norms (BERT's value).", minimum=0.0)
    mask_probability: float = _field(
        0.4, "Share of training items replaced by [MASK] and predicted (the paper's rho).", minimum=0.01, maximum=0.9
    )
    last_item_mask_share: float = _field(
        0.0,
        "Share of training sequences that mask only their last item instead (RecBole's ft_ratio), "
        "so training also sees the inference situation; 0 turns it off.",
        minimum=0.0,
        maximum=1.0,
    )
    masking: Literal["exact", "bernoulli"] = _field(
        "bernoulli",
        "bert4rec: 'exact' masks round(n x mask_probability) of a window's n items (at least one, as "
        "the reference code); 'bernoulli' is T4R's rule (independent draws plus one more per window).",
    )
    max_predictions: int = _field(0, "bert4rec, exact masking: most masked items per window; 0 = no cap.", minimum=0)
    output_transform: bool = _field(
        False, "Dense + GELU + LayerNorm between the Transformer and the item scores (the BERT4Rec reference head)."
    )
    output_bias: Literal[False, True, "popularity", "auto"] = _field(
        "auto",
        "A learned score bias per item (the BERT4Rec reference head): false, true (starts at 0), "
        "popularity (starts at the log of each item's training frequency, so training begins where "
        "MostPopular is and spends its epochs on order), or auto = popularity above 8,192 movies (where "
        "it was measured to help), else false (measured on MovieLens-100K).",
    )
    sampled_softmax: int | Literal["auto"] = _field(
        "auto",
        "Train against this many items drawn once per step and shared by the batch, instead of the "
        "whole catalogue: the step then costs about the same at 20k or 1M items. 0 = full softmax; auto = "
        "full softmax up to 8,192 movies, else 2,048 negatives (the choice is printed and recorded in run.json). "
        "Evaluation always ranks the whole catalogue.",
        minimum=0,
    )
    negative_sampler: Literal["uniform", "popularity"] = _field(
        "popularity",
        "sampled_softmax: draw negatives uniformly or in proportion to training frequency (the softmax "
        "loss corrects either with logQ).",
    )
    loss: Literal["softmax", "gbce"] = _field(
        "softmax",
        "sampled_softmax: softmax cross-entropy (logQ-corrected), or gBCE (gSASRec: binary cross-entropy "
        "calibrated by model.gbce_t; needs negative_sampler=uniform).",
    )
    gbce_t: float = _field(0.75, "gBCE calibration t (gSASRec: 0.75); 0 is plain BCE.", minimum=0.0, maximum=1.0)
    seen_item_weight: bool = _field(
        True,
        "Learn one weight added to the score of movies already in the session: strongly negative on "
        "data without repeats (MovieLens), positive where people re-watch.",
    )
    title_embeddings: Literal["off", "init", "feature"] = _field(
        "off",
        "Use the movies' titles (all-MiniLM-L6-v2 vectors, cached in the data dir). off: ids only. "
        "init: start the item embeddings (and so the tied output layer) from the titles projected to "
        "d_model. feature: every item is its id embedding plus a learned projection of its title, in "
        "the input and the scores, so movies with few or no training sessions (even ones only in the "
        "titles file) are scored by their title.",
    )


@dataclass
class TrainConfig:
    epochs: int = _field(200, "Most epochs to train; early stopping usually ends sooner.", minimum=1)
    max_steps: int = _field(0, "Stop after this many optimiser steps instead; 0 uses epochs.", minimum=0)
    batch_size: int = _field(128, "Training sequences per batch (per device).", minimum=1)
    eval_batch_size: int = _field(512, "Sequences per batch when evaluating.", minimum=1)
    learning_rate: float = _field(3e-3, "Peak learning rate of AdamW.", minimum=0.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = _field(
        "constant_with_warmup", "Learning-rate schedule after warm-up."
    )
    warmup_steps: int = _field(100, "Steps of linear learning-rate warm-up.", minimum=0)
    weight_decay: float = _field(0.01, "AdamW weight decay.", minimum=0.0)
    max_grad_norm: float = _field(5.0, "Clip gradients to this norm.", minimum=0.0)
    patience: int = _field(
        20, "Stop after this many evaluations without a better validation NDCG@10; 0 never stops early.", minimum=0
    )
    min_epochs: int = _field(
        40, "Early stopping waits at least this many epochs (BERT4Rec plateaus before it learns order).", minimum=0
    )
    time_budget_s: float = _field(
        0.0,
        "Stop at the first validation after this many seconds of training (best checkpoint kept); 0 = no limit.",
        minimum=0.0,
    )
    window_stride: int = _field(
        25,
        "Cut histories longer than the window into windows this many items apart (sliding windows), "
        "so every training interaction is used; 0 keeps only each history's most recent window.",
        minimum=0,
    )
    length_buckets: int = _field(
        0,
        "Group each epoch's shuffled windows into batches of similar length: runs of this many batches are "
        "sorted by length before being cut, and the batches shuffled (far less padding where most histories "
        "are short, but less learnt per epoch: off by default, see the README); 0 = plain shuffle.",
        minimum=0,
    )
    copies_per_epoch: int = _field(
        1,
        "Feed every training window this many times per epoch, masked afresh each time (BERT4Rec's dupe_factor).",
        minimum=1,
    )
    withhold_movies: float = _field(
        0.0,
        "Share of movies (drawn with the seed) whose interactions are removed from training, to measure "
        "cold start: they stay in validation and test, where evaluation reports them as cold targets.",
        minimum=0.0,
        maximum=0.9,
    )
    eval_every_epochs: int = _field(1, "Evaluate on validation (and checkpoint) every this many epochs.", minimum=1)
    keep_checkpoints: int = _field(2, "Checkpoints kept on disk (the best one is always kept).", minimum=1)


@dataclass
class EvalConfig:
    # Keys older configs may still hold, dropped with a warning so that old runs still load.
    retired: typing.ClassVar[dict[str, str]] = {
        "exclude_seen": "evaluate always reports both 'full' (all movies) and 'full_unseen' "
        "(the user's watched movies left out); for recommendations see serve.exclude_seen",
    }

    top_ks: list[int] = _field([1, 5, 10, 20], "Cut-offs k of HR@k and NDCG@k.")
    sampled_negatives: int = _field(
        100, "Negatives per target in the sampled protocol, drawn by popularity (the paper: 100).", minimum=1
    )


@dataclass
class ServeConfig:
    exclude_seen: Literal["auto", True, False] = _field(
        "auto",
        "Leave the session's own movies out of recommendations (predict, recommend, the Triton "
        "ensemble): true, false, or auto = true when under 1% of interactions repeat a movie "
        "already in their sequence (preprocess measures it), else false. Decided when training "
        "saves the model and recorded in run.json.",
    )


@dataclass
class TuneConfig:
    mask_probabilities: list[float] = _field([0.1, 0.2, 0.3, 0.4], "Values of model.mask_probability to try.")
    last_item_mask_shares: list[float] = _field(
        [], "Values of model.last_item_mask_share to try with each mask probability; empty keeps the config's."
    )


@dataclass
class AppConfig:
    seed: int = _field(
        42, "Seed for every random choice (sampling, shuffling, initialisation).", minimum=0, maximum=2**32 - 1
    )
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def validate(self) -> None:
        if self.split.valid_quantile >= self.split.test_quantile:
            raise ConfigError("split.valid_quantile must be below split.test_quantile")
        cutoffs = (self.split.valid_cutoff, self.split.test_cutoff)
        if None not in cutoffs and cutoffs[0] >= cutoffs[1]:
            raise ConfigError("split.valid_cutoff must be before split.test_cutoff")
        if self.dask.scheduler_address and self.dask.n_workers:
            raise ConfigError("set dask.scheduler_address or dask.n_workers, not both")
        if self.model.d_model % self.model.n_heads:
            raise ConfigError(f"model.n_heads ({self.model.n_heads}) must divide model.d_model ({self.model.d_model})")
        if self.model.architecture != "bert4rec":
            changed = [f"model.{key}={getattr(self.model, key)!r}" for key in MASKING_KEYS
                       if getattr(self.model, key) != ModelConfig.__dataclass_fields__[key].default]
            if changed:
                raise ConfigError(
                    f"{', '.join(changed)}: masking applies to model.architecture=bert4rec only; "
                    f"{self.model.architecture} trains on every next item, so leave these keys at their defaults"
                )
        if self.model.loss == "gbce" and self.model.negative_sampler != "uniform":
            raise ConfigError("model.loss=gbce assumes uniformly drawn negatives: set model.negative_sampler=uniform")
        if not self.evaluate.top_ks or min(self.evaluate.top_ks) < 1:
            raise ConfigError("evaluate.top_ks must list cut-offs of at least 1")
        for value in self.tune.mask_probabilities:
            if not 0 < value < 1:
                raise ConfigError(f"tune.mask_probabilities: {value} is not between 0 and 1")
        for value in self.tune.last_item_mask_shares:
            if not 0 <= value <= 1:
                raise ConfigError(f"tune.last_item_mask_shares: {value} is not between 0 and 1")


# ---------------------------------------------------------------- loading and checking


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (element,) = typing.get_args(annotation)
        return [_coerce(item, element, f"{path}[{index}]") for index, item in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if isinstance(value, bool) and "off" in allowed:
            value = "off" if value is False else value  # YAML 1.1 reads a bare `off` as false
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{path}: expected a finite number, got {value!r}")
            return number
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, path)
    raise ConfigError(f"{path}: unsupported type {_type_name(annotation)}")


def _check_range(value: Any, spec: dataclasses.Field, path: str) -> None:
    if value is None or isinstance(value, str):  # "auto" and other named values have no range
        return
    minimum, maximum = spec.metadata.get("minimum"), spec.metadata.get("maximum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{path}: {value!r} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{path}: {value!r} is above the maximum {maximum}")


def _drop_retired(cls: type, values: dict, path: str) -> dict:
    retired = getattr(cls, "retired", {})
    for key in retired.keys() & values.keys():
        warnings.warn(f"{path}.{key} is no longer used and was ignored: {retired[key]}", FutureWarning, stacklevel=4)
    return {key: value for key, value in values.items() if key not in retired}


def _rename_moved(cls: type, values: dict, path: str) -> dict:
    renamed = getattr(cls, "renamed", {})
    for old in renamed.keys() & values.keys():
        new = renamed[old]
        if new in values:
            raise ConfigError(f"{path}.{old} and {path}.{new} are the same setting (its old and new name): keep {path}.{new}")
        warnings.warn(f"{path}.{old} is now {path}.{new}; read as such", FutureWarning, stacklevel=4)
    return {renamed.get(key, key): value for key, value in values.items()}


def renamed_paths(cls: type = AppConfig, prefix: str = "") -> dict[str, str]:
    """Every old dotted path of a renamed key, mapped to its new path (``split.protocol`` -> ``split.rule``)."""
    hints = typing.get_type_hints(cls)
    paths = {f"{prefix}{old}": f"{prefix}{new}" for old, new in getattr(cls, "renamed", {}).items()}
    for spec in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[spec.name]):
            paths.update(renamed_paths(hints[spec.name], f"{prefix}{spec.name}."))
    return paths


def _build(cls: type, values: Any, path: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    specs = {spec.name: spec for spec in dataclasses.fields(cls)}
    values = _rename_moved(cls, _drop_retired(cls, values, path), path)
    for key in values:
        if key not in specs:
            where = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(str(key), specs, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{where}'{hint}; valid keys here: {', '.join(specs)}")
    kwargs = {}
    for name, spec in specs.items():
        if name not in values:
            continue
        where = f"{path}.{name}" if path else name
        kwargs[name] = _coerce(values[name], hints[name], where)
        _check_range(kwargs[name], spec, where)
    return cls(**kwargs)


def leaf_paths(cls: type = AppConfig, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every settable dotted path of the tree, mapped to its field."""
    paths: dict[str, dataclasses.Field] = {}
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        path = f"{prefix}{spec.name}"
        if dataclasses.is_dataclass(hints[spec.name]):
            paths.update(leaf_paths(hints[spec.name], f"{path}."))
        else:
            paths[path] = spec
    return paths


def _resolve_override_path(key: str) -> str:
    paths = leaf_paths()
    if key in paths:
        return key
    moved = {old: new for old, new in renamed_paths().items() if key in (old, old.rsplit(".", 1)[-1])}
    if len(moved) == 1:
        ((old, new),) = moved.items()
        warnings.warn(f"{old} is now {new}; read as such", FutureWarning, stacklevel=4)
        return new
    # A bare field name is accepted when it names exactly one field (on_bad_record=skip).
    matches = [path for path in paths if path.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"override '{key}' is ambiguous: use one of {', '.join(matches)}")
    close = difflib.get_close_matches(key, list(paths), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown config key '{key}'{hint}")


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set ``key.sub=value`` strings into a nested dict; values are parsed as YAML scalars."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override '{override}' must look like key.sub=value")
        key, raw = override.split("=", 1)
        path = _resolve_override_path(key.strip())
        node = values
        *parents, leaf = path.split(".")
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                node[parent] = {}
            node = node[parent]
        try:
            node[leaf] = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, RecursionError, ValueError) as error:
            # ValueError: YAML reads a number of more than 4,300 digits as an int, which Python refuses.
            raise ConfigError(f"override '{key.strip()}': value {raw[:80]!r} is not a YAML scalar ({str(error)[:200]})") from None
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AppConfig:
    """Load the YAML file (defaults when None), apply overrides, check everything."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from error
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to be a configuration file") from None
        except ValueError as error:  # a number of more than 4,300 digits
            raise ConfigError(f"{path}: a value cannot be read ({str(error)[:200]})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    values = apply_overrides(values, overrides or [])
    config = _build(AppConfig, values, "")
    config.validate()
    return config


def config_to_dict(config: AppConfig) -> dict:
    return dataclasses.asdict(config)


def save_config(config: AppConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def describe_fields() -> str:
    """One line per settable key with its default and help, for ``--help`` epilogs."""
    lines = []
    for path, spec in leaf_paths().items():
        default = spec.default
        if default is dataclasses.MISSING:
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None
        lines.append(f"  {path} (default {default!r}): {spec.metadata.get('help', '')}")
    return "\n".join(lines)
