"""RUN_DIR/report.md (model against baselines, validation and test) and its bar plot."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from t4r_app.evaluate.metrics import RankingMetrics
from t4r_app.evaluate.results import AMONG_COLD, COMPARED_K, EVAL_FILE, EvaluationResults, EvaluationSettings
from t4r_app.plotting import pyplot

REPORT_FILE = "report.md"
PLOT_FILE = "eval_plot.png"
SCORER_LABELS = {
    "most_popular": "MostPopular",
    "markov": "Markov (1st order)",
    "title_popularity": "popularity by similar titles",
    "repeat_recent": "watched most and most recently, then Markov",
}
SLICE_TITLES = {
    "rare": "rare targets (least-watched 20% of trained movies)",
    "cold": "cold targets (no training interactions)",
    "new": "new movies (since the kept vocabulary)",
}
SPLIT_TITLES = {"valid": "validation", "test": "test"}
# How each ranking is named in tables and in the verdict sentences.
RANKINGS = {"full": "over all movies", "full_unseen": "with the user's watched movies left out"}
PLOTTED_K = 10

Column = tuple[str, Callable[[RankingMetrics], float]]


def _label(name: str, settings: EvaluationSettings | None) -> str:
    """How a scorer is named in tables: the model by its architecture (eval.json's ``model_label``)."""
    if name == "model":
        return settings.model_label if settings is not None else "model"
    return SCORER_LABELS.get(name, name)


def _protocol_label(protocol: str, settings: EvaluationSettings) -> str:
    if protocol == "sampled":
        return f"sampled ({settings.sampled_negatives} negatives)"
    return RANKINGS[protocol]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _hr(k: int) -> Column:
    return f"HR@{k}", lambda metrics: metrics.hr[k]


def _ndcg(k: int) -> Column:
    return f"NDCG@{k}", lambda metrics: metrics.ndcg[k]


def report_table(results: EvaluationResults, split: str) -> str:
    """A markdown table: one row per ranking protocol and scorer, HR@k, NDCG@k and MRR as columns."""
    settings = results.settings
    ks = settings.top_ks
    columns = [_hr(k) for k in ks] + [_ndcg(k) for k in ks] + [("MRR", lambda metrics: metrics.mrr)]
    scorers = results.splits[split].scorers
    rows = [
        [
            _protocol_label(protocol, settings),
            _label(name, settings),
            *(f"{value(scorer.protocol(protocol)):.4f}" for _, value in columns),
        ]
        for protocol in settings.protocols
        for name, scorer in scorers.items()
    ]
    return _markdown(["ranking", "scorer", *(label for label, _ in columns)], rows)


def comparison_table(results: EvaluationResults, split: str) -> str:
    """Model minus baseline NDCG@10 per ranking, with the paired bootstrap interval and its verdict."""
    rows = []
    for name, by_protocol in results.splits[split].comparison.items():
        for protocol, comparison in by_protocol.items():
            low, high = comparison.ci95
            label = _label(name, results.settings)
            rows.append([label, RANKINGS[protocol], f"{comparison.difference:+.4f}", f"[{low:+.4f}, {high:+.4f}]",
                         verdict(low, high)])
    header = ["baseline", "ranking", f"{_label('model', results.settings)} minus baseline, NDCG@{COMPARED_K}", "95% interval", "verdict"]
    return _markdown(header, rows)


def slices_table(results: EvaluationResults, split: str) -> str:
    """NDCG@10 and HR@10 of every scorer on the rare, cold and new targets; empty when there are none."""
    cells_of = [(protocol, column) for protocol in RANKINGS for column in (_ndcg(PLOTTED_K), _hr(PLOTTED_K))]
    cells_of.append((AMONG_COLD, _hr(PLOTTED_K)))
    rows = []
    for name, slice_results in results.splits[split].slices.items():
        for scorer_name, scorer in slice_results.scorers.items():
            rankings = scorer.by_protocol()
            cells = [f"{value(rankings[p]):.4f}" if p in rankings else "" for p, (_, value) in cells_of]
            targets = f"{SLICE_TITLES.get(name, name)}: {slice_results.rows:,}"
            rows.append([targets, _label(scorer_name, results.settings), *cells])
    if not rows:
        return ""
    header = [f"{label} {RANKINGS.get(p, 'among the cold movies')}" for p, (label, _) in cells_of]
    return _markdown(["targets", "scorer", *header], rows)


def history_table(results: EvaluationResults, split: str) -> str:
    """NDCG@10 and HR@10 of every scorer per bucket of history length (movies watched before the
    target), with the users in each; empty for eval.json files from before the buckets."""
    by_history = results.splits[split].by_history
    total = sum(bucket.rows for bucket in by_history.values())
    cells_of = [(protocol, column) for protocol in RANKINGS for column in (_ndcg(PLOTTED_K), _hr(PLOTTED_K))]
    rows = []
    for name, bucket in by_history.items():
        for scorer_name, scorer in bucket.scorers.items():
            rankings = scorer.by_protocol()
            users = f"{name}: {bucket.rows:,} ({bucket.rows / total:.0%})"
            rows.append([users, _label(scorer_name, results.settings), *(f"{value(rankings[p]):.4f}" for p, (_, value) in cells_of)])
    if not rows:
        return ""
    header = ["movies watched before the target: users", "scorer", *(f"{label} {RANKINGS[p]}" for p, (label, _) in cells_of)]
    return _markdown(header, rows)


# What the verdicts' intervals do and do not cover: said wherever a verdict is printed.
INTERVAL_SCOPE = (
    "The 95% intervals are a paired bootstrap over this split's users: they cover which users were "
    "drawn, not which training seed; a second seed can move the model by more."
)


def verdict(low: float, high: float) -> str:
    """"beats" when the interval of model minus baseline lies above 0, "loses" below, else "not distinguishable"."""
    if low > 0:
        return "beats"
    if high < 0:
        return "loses"
    return "not distinguishable"


def baseline_verdicts(results: EvaluationResults, split: str = "valid") -> list[str]:
    """One sentence per baseline and ranking where the model does not clearly beat it (its interval is not above 0)."""
    split_results = results.splits[split]
    lines = []
    for protocol, ranking in RANKINGS.items():
        model = split_results.model.protocol(protocol).ndcg[COMPARED_K]
        for name, scorer in split_results.baselines.items():
            low, high = split_results.comparison[name][protocol].ci95
            outcome = verdict(low, high)
            if outcome == "beats":
                continue
            said = "LOSES to" if outcome == "loses" else "is NOT distinguishable from"
            theirs = scorer.protocol(protocol).ndcg[COMPARED_K]
            lines.append(
                f"{SPLIT_TITLES[split]}: the model {said} {name} {ranking} ({model:.3f} vs {theirs:.3f} "
                f"NDCG@{COMPARED_K}; 95% interval of the difference [{low:+.3f}, {high:+.3f}])"
            )
    return lines


def verdict_lines(results: EvaluationResults, split: str = "valid") -> list[str]:
    """``baseline_verdicts``, or one line saying the model beats them all; then what the intervals cover."""
    return (baseline_verdicts(results, split) or [
        f"{SPLIT_TITLES[split]}: the model beats every baseline on NDCG@{COMPARED_K}, {' and '.join(RANKINGS.values())} "
        "(each 95% interval of the difference above 0)"
    ]) + [INTERVAL_SCOPE]


def validation_verdicts(run_dir: str | Path) -> str:
    """Whether a finished run's model beats the baselines on validation (what ``train`` prints
    last; it writes no file: eval.json is ``evaluate``'s)."""
    from t4r_app.evaluate.protocol import evaluate_results

    return "\n".join(verdict_lines(evaluate_results(run_dir, splits=("valid",), progress=False), "valid"))


def console_report(results: EvaluationResults, run_dir: str | Path) -> str:
    """What ``evaluate`` prints: per split the metrics, the comparison, the slices and the
    history buckets; then the validation verdicts and the files written."""
    parts = []
    for split, title in SPLIT_TITLES.items():
        parts.append(f"\n{title} ({results.splits[split].model.full.count:,} sequences)\n{report_table(results, split)}")
        parts.append(f"\n{comparison_table(results, split)}")
        if slices := slices_table(results, split):
            parts.append(f"\n{slices}")
        if histories := history_table(results, split):
            parts.append(f"\n{histories}")
    parts.append("\n" + "\n".join(verdict_lines(results, "valid")))
    if results.settings.repeat_baseline:
        parts.append(results.settings.repeat_baseline)
    parts.append(f"\nwrote {Path(run_dir) / EVAL_FILE} and {Path(run_dir) / REPORT_FILE}")
    return "\n".join(parts)


def write_report(results: EvaluationResults, run_dir: Path) -> Path:
    settings = results.settings
    splits = [name for name in ("valid", "test") if name in results.splits]
    bootstrap = settings.bootstrap
    parts = [
        f"# {settings.model_label} evaluation",
        "",
        f"Data: `{settings.data_dir}`. Each target is ranked {RANKINGS['full']}, {RANKINGS['full_unseen']} "
        f"({settings.unseen_leaves_out}; the same rule for every scorer, and a target the user already watched "
        "then ranks last), and in the "
        f"sampled protocol against {settings.sampled_negatives} popularity-sampled negatives "
        f"(seed {settings.seed}). Ties count against the target. The baselines are fitted on "
        f"{settings.baselines_fitted_on}. Differences: paired bootstrap over the evaluation rows "
        f"({bootstrap.resamples:,} resamples, seed {bootstrap.seed})." + (f" {settings.repeat_baseline}." if settings.repeat_baseline else ""),
    ]
    if "valid" in results.splits:
        *verdicts, scope = verdict_lines(results, "valid")
        parts += ["", *(f"- **{line}**" for line in verdicts), "", scope]
    for split in splits:
        parts += [
            "",
            f"## {SPLIT_TITLES[split].capitalize()} ({results.splits[split].model.full.count:,} sequences)",
            "",
            report_table(results, split),
            "",
            comparison_table(results, split),
        ]
        if slices := slices_table(results, split):
            parts += ["", slices]
        if histories := history_table(results, split):
            parts += ["", histories]
    parts += ["", f"![NDCG@{PLOTTED_K} and HR@{PLOTTED_K}]({PLOT_FILE})", ""]
    path = Path(run_dir) / REPORT_FILE
    path.write_text("\n".join(parts))
    _plot(results, splits, Path(run_dir) / PLOT_FILE)
    return path


def _plot(results: EvaluationResults, splits: list[str], path: Path) -> None:
    import numpy as np

    plt = pyplot()
    names = list(results.splits[splits[0]].scorers)
    panels = [(split, column) for split in splits for column in (_ndcg(PLOTTED_K), _hr(PLOTTED_K))]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6), squeeze=False)
    width = 0.4
    for axis, (split, (label, value)) in zip(axes[0], panels):
        scorers = results.splits[split].scorers
        for offset, (protocol, color) in enumerate(zip(RANKINGS, ("tab:blue", "tab:orange"))):
            values = [_value_or_nan(value, scorers[name].protocol(protocol)) for name in names]
            positions = np.arange(len(names)) + (offset - 0.5) * width
            axis.bar(positions, values, width, color=color, label=RANKINGS[protocol])
        axis.set_xticks(range(len(names)), [_label(n, results.settings) for n in names], rotation=25, ha="right", fontsize=8)
        axis.set_title(f"{split} {label}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _value_or_nan(value: Callable[[RankingMetrics], float], metrics: RankingMetrics) -> float:
    try:
        return value(metrics)
    except KeyError:  # an eval.json whose top_ks left this k out
        return float("nan")
