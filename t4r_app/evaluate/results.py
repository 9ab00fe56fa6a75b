"""What ``evaluate`` measures, as types, and RUN_DIR/eval.json, the one place they become JSON.

eval.json::

    {split: {"model": {protocol: metrics},
             "baselines": {name: {protocol: metrics}},
             "comparison": {baseline: {protocol: {"ndcg@10_difference", "ci95", "resamples"}}},
             "slices": {"rare" | "cold" | "new": {"rows": n, scorer: {protocol: metrics}}},
             "by_history": {"1" | "2-4" | "5-9" | "10-49" | "50+": {"rows": n, scorer: {protocol: metrics}}}},
     "settings": {...}}

``by_history`` groups the rows by how many movies the user watched before the target
(``HISTORY_BUCKETS``), so a figure can be read for the users it covers.

where metrics are ``RankingMetrics.to_json()`` (``hr@k``, ``ndcg@k``, ``mrr``, ``count``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from t4r_app.evaluate.metrics import RankingMetrics

EVAL_FILE = "eval.json"
SETTINGS = "settings"  # eval.json's one top-level key that is not a split
COMPARED_K = 10  # the bootstrap compares NDCG@10, and the verdicts read it
DIFFERENCE = f"ndcg@{COMPARED_K}_difference"
PROTOCOLS = ("full", "full_unseen", "sampled")  # how a target is ranked; see ``evaluate.protocol``
AMONG_COLD = "among_cold"  # the cold slice only: the target among the movies without training interactions
# Buckets of history length (movies watched before the target): (name, first, last or None).
HISTORY_BUCKETS = (("1", 1, 1), ("2-4", 2, 4), ("5-9", 5, 9), ("10-49", 10, 49), ("50+", 50, None))


@dataclass(frozen=True)
class ScorerResults:
    """One scorer's metrics on one split (or slice), per ranking protocol (see ``evaluate.protocol``)."""

    full: RankingMetrics
    full_unseen: RankingMetrics
    sampled: RankingMetrics
    among_cold: RankingMetrics | None = None  # the cold slice only

    def by_protocol(self) -> dict[str, RankingMetrics]:
        """The rankings present, by protocol name, in eval.json's order."""
        return {name: metrics for name in _PROTOCOL_FIELDS if (metrics := getattr(self, name)) is not None}

    def protocol(self, name: str) -> RankingMetrics:
        """The metrics of the protocol called ``name`` (KeyError when this scorer has none)."""
        return self.by_protocol()[name]

    def to_json(self) -> dict[str, dict[str, float]]:
        return {name: metrics.to_json() for name, metrics in self.by_protocol().items()}

    @classmethod
    def from_json(cls, data: dict) -> "ScorerResults":
        return cls(**{name: RankingMetrics.from_json(metrics) for name, metrics in data.items()})


_PROTOCOL_FIELDS = tuple(f.name for f in fields(ScorerResults))


@dataclass(frozen=True)
class BootstrapComparison:
    """Model minus baseline NDCG@COMPARED_K on the same rows, with the paired bootstrap's 95% interval."""

    difference: float
    ci95: tuple[float, float]
    resamples: int

    def to_json(self) -> dict:
        return {DIFFERENCE: self.difference, "ci95": list(self.ci95), "resamples": self.resamples}

    @classmethod
    def from_json(cls, data: dict) -> "BootstrapComparison":
        low, high = data["ci95"]
        return cls(data[DIFFERENCE], (low, high), data["resamples"])


@dataclass(frozen=True)
class SliceResults:
    """Every scorer on the targets of one slice; ``scorers`` is empty when no target falls in it."""

    rows: int
    scorers: dict[str, ScorerResults]

    def to_json(self) -> dict:
        return {"rows": self.rows, **{name: scorer.to_json() for name, scorer in self.scorers.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "SliceResults":
        scorers = {name: ScorerResults.from_json(value) for name, value in data.items() if name != "rows"}
        return cls(data["rows"], scorers)


@dataclass(frozen=True)
class SplitResults:
    model: ScorerResults
    baselines: dict[str, ScorerResults]
    comparison: dict[str, dict[str, BootstrapComparison]]  # baseline -> protocol -> model minus baseline
    slices: dict[str, SliceResults]
    by_history: dict[str, SliceResults] = field(default_factory=dict)  # HISTORY_BUCKETS name -> rows in it

    @property
    def scorers(self) -> dict[str, ScorerResults]:
        """The model first, then the baselines."""
        return {"model": self.model, **self.baselines}

    def to_json(self) -> dict:
        return {
            "model": self.model.to_json(),
            "baselines": {name: scorer.to_json() for name, scorer in self.baselines.items()},
            "comparison": {
                name: {protocol: value.to_json() for protocol, value in by_protocol.items()}
                for name, by_protocol in self.comparison.items()
            },
            "slices": {name: value.to_json() for name, value in self.slices.items()},
            "by_history": {name: value.to_json() for name, value in self.by_history.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> "SplitResults":
        # Older eval.json files have no comparison, slices or by_history.
        return cls(
            model=ScorerResults.from_json(data["model"]),
            baselines={name: ScorerResults.from_json(value) for name, value in data["baselines"].items()},
            comparison={
                name: {protocol: BootstrapComparison.from_json(value) for protocol, value in by_protocol.items()}
                for name, by_protocol in data.get("comparison", {}).items()
            },
            slices={name: SliceResults.from_json(value) for name, value in data.get("slices", {}).items()},
            by_history={name: SliceResults.from_json(value) for name, value in data.get("by_history", {}).items()},
        )


@dataclass(frozen=True)
class BootstrapSettings:
    metric: str
    resamples: int
    seed: int
    level: float


# What full_unseen left out before it left out the whole known history (eval.json without the key).
OLD_UNSEEN = "the model's input window of the session"
UNSEEN_LEAVES_OUT = "every movie the user watched before the target: the whole training history and the inputs"


@dataclass(frozen=True)
class EvaluationSettings:
    """How the numbers were made; eval.json's ``settings``, field for field."""

    top_ks: list[int]
    protocols: list[str]
    sampled_negatives: int
    seed: int
    bootstrap: BootstrapSettings
    baselines_fitted_on: str
    slices: dict[str, str]  # slice name -> what its targets are
    data_dir: str
    unseen_leaves_out: str = OLD_UNSEEN  # what full_unseen leaves out of each ranking
    repeat_baseline: str = ""  # whether repeat_recent was scored, and why
    model_label: str = "BERT4Rec"  # how tables name the model: its architecture (files from before it: BERT4Rec)

    @classmethod
    def from_json(cls, data: dict) -> "EvaluationSettings":
        # Keys of older files that no longer mean anything (evaluate.exclude_seen) are left out;
        # fields newer than the file keep their defaults.
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        return cls(**{**values, "bootstrap": BootstrapSettings(**values["bootstrap"])})


@dataclass(frozen=True)
class EvaluationResults:
    splits: dict[str, SplitResults]  # "valid" and/or "test"
    settings: EvaluationSettings

    def to_json(self) -> dict:
        return {**{name: split.to_json() for name, split in self.splits.items()}, SETTINGS: asdict(self.settings)}

    @classmethod
    def from_json(cls, data: dict) -> "EvaluationResults":
        splits = {name: SplitResults.from_json(value) for name, value in data.items() if name != SETTINGS}
        return cls(splits, EvaluationSettings.from_json(data[SETTINGS]))

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / EVAL_FILE
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "EvaluationResults":
        return cls.from_json(json.loads((Path(run_dir) / EVAL_FILE).read_text()))
