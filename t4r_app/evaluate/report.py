"""RUN_DIR/report.md (model against baselines, validation and test) and its bar plot."""

from __future__ import annotations

from pathlib import Path

REPORT_FILE = "report.md"
PLOT_FILE = "eval_plot.png"
SCORER_LABELS = {
    "model": "BERT4Rec",
    "most_popular": "MostPopular",
    "markov": "Markov (1st order)",
    "title_popularity": "popularity by similar titles",
}
SLICE_TITLES = {"rare": "rare targets (least-watched 20% of trained movies)", "cold": "cold targets (no training interactions)"}
SPLIT_TITLES = {"valid": "validation", "test": "test"}
# How each ranking is named in tables and in the verdict sentences.
RANKINGS = {"full": "over all movies", "full_unseen": "with the session's own movies left out"}
VERDICT_METRIC = "ndcg@10"


def _scorers(split_results: dict) -> dict[str, dict]:
    return {"model": split_results["model"], **split_results["baselines"]}


def _protocol_label(protocol: str, settings: dict) -> str:
    if protocol == "sampled":
        return f"sampled ({settings['sampled_negatives']} negatives)"
    return RANKINGS[protocol]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report_table(results: dict, split: str) -> str:
    """A markdown table: one row per ranking protocol and scorer, HR@k, NDCG@k and MRR as columns."""
    settings = results["settings"]
    ks = settings["top_ks"]
    columns = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]
    scorers = _scorers(results[split])
    rows = [
        [_protocol_label(protocol, settings), SCORER_LABELS.get(name, name), *(f"{metrics[protocol][c]:.4f}" for c in columns)]
        for protocol in settings["protocols"]
        for name, metrics in scorers.items()
    ]
    return _markdown(["ranking", "scorer", *(c.upper() for c in columns)], rows)


def comparison_table(results: dict, split: str) -> str:
    """Model minus baseline NDCG@10 per ranking, with the paired bootstrap interval."""
    rows = []
    for name, by_protocol in results[split]["comparison"].items():
        for protocol, comparison in by_protocol.items():
            low, high = comparison["ci95"]
            difference = comparison[f"{VERDICT_METRIC}_difference"]
            rows.append([SCORER_LABELS.get(name, name), RANKINGS[protocol], f"{difference:+.4f}", f"[{low:+.4f}, {high:+.4f}]"])
    return _markdown(["baseline", "ranking", "BERT4Rec minus baseline, NDCG@10", "95% interval"], rows)


def slices_table(results: dict, split: str) -> str:
    """NDCG@10 and HR@10 of every scorer on the rare and the cold targets; empty when there are none."""
    columns = [(protocol, metric) for protocol in RANKINGS for metric in ("ndcg@10", "hr@10")] + [("among_cold", "hr@10")]
    rows = []
    for name, values in results[split].get("slices", {}).items():
        for scorer, metrics in values.items():
            if scorer == "rows":
                continue
            cells = [f"{metrics[p][m]:.4f}" if p in metrics else "" for p, m in columns]
            rows.append([f"{SLICE_TITLES.get(name, name)}: {values['rows']:,}", SCORER_LABELS.get(scorer, scorer), *cells])
    if not rows:
        return ""
    header = [f"{m.upper()} {RANKINGS.get(p, 'among the cold movies')}" for p, m in columns]
    return _markdown(["targets", "scorer", *header], rows)


def baseline_verdicts(results: dict, split: str = "valid") -> list[str]:
    """One sentence per baseline and ranking where the model's NDCG@10 does not beat it."""
    split_results = results[split]
    verdicts = []
    for protocol, ranking in RANKINGS.items():
        model = split_results["model"][protocol][VERDICT_METRIC]
        for name, metrics in split_results["baselines"].items():
            theirs = metrics[protocol][VERDICT_METRIC]
            if model > theirs:
                continue
            interval = split_results.get("comparison", {}).get(name, {}).get(protocol, {}).get("ci95")
            detail = f"; 95% interval of the difference [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
            verdicts.append(
                f"{SPLIT_TITLES[split]}: the model does NOT beat {name} {ranking} "
                f"({model:.3f} vs {theirs:.3f} NDCG@10{detail})"
            )
    return verdicts


def verdict_lines(results: dict, split: str = "valid") -> list[str]:
    """``baseline_verdicts``, or one line saying the model beats them all."""
    return baseline_verdicts(results, split) or [
        f"{SPLIT_TITLES[split]}: the model beats every baseline on NDCG@10, {' and '.join(RANKINGS.values())}"
    ]


def write_report(results: dict, run_dir: Path) -> Path:
    settings = results["settings"]
    splits = [name for name in ("valid", "test") if name in results]
    bootstrap = settings["bootstrap"]
    parts = [
        "# BERT4Rec evaluation",
        "",
        f"Data: `{settings['data_dir']}`. Each target is ranked {RANKINGS['full']}, {RANKINGS['full_unseen']} "
        "(the same rule for every scorer; a target the session already holds then ranks last), and in the "
        f"sampled protocol against {settings['sampled_negatives']} popularity-sampled negatives "
        f"(seed {settings['seed']}). Ties count against the target. The baselines are fitted on "
        f"{settings['baselines_fitted_on']}. Differences: paired bootstrap over the evaluation rows "
        f"({bootstrap['resamples']:,} resamples, seed {bootstrap['seed']}).",
    ]
    if "valid" in results:
        parts += ["", *(f"- **{line}**" for line in verdict_lines(results, "valid"))]
    for split in splits:
        count = results[split]["model"]["full"]["count"]
        parts += [
            "",
            f"## {SPLIT_TITLES[split].capitalize()} ({count:,} sequences)",
            "",
            report_table(results, split),
            "",
            comparison_table(results, split),
        ]
        if slices := slices_table(results, split):
            parts += ["", slices]
    parts += ["", f"![NDCG@10 and HR@10]({PLOT_FILE})", ""]
    path = Path(run_dir) / REPORT_FILE
    path.write_text("\n".join(parts))
    _plot(results, splits, Path(run_dir) / PLOT_FILE)
    return path


def _plot(results: dict, splits: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(_scorers(results[splits[0]]))
    panels = [(split, metric) for split in splits for metric in ("ndcg@10", "hr@10")]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6), squeeze=False)
    width = 0.4
    for axis, (split, metric) in zip(axes[0], panels):
        for offset, (protocol, color) in enumerate(zip(RANKINGS, ("tab:blue", "tab:orange"))):
            values = [_scorers(results[split])[name][protocol].get(metric, np.nan) for name in names]
            positions = np.arange(len(names)) + (offset - 0.5) * width
            axis.bar(positions, values, width, color=color, label=RANKINGS[protocol])
        axis.set_xticks(range(len(names)), [SCORER_LABELS.get(n, n) for n in names], rotation=25, ha="right", fontsize=8)
        axis.set_title(f"{split} {metric.upper()}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
