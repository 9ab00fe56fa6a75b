"""RUN_DIR/report.md (model against baselines, validation and test) and its bar plot."""

from __future__ import annotations

from pathlib import Path

REPORT_FILE = "report.md"
PLOT_FILE = "eval_plot.png"
SCORER_LABELS = {"model": "BERT4Rec", "most_popular": "MostPopular", "markov": "Markov (1st order)"}


def _scorers(split_results: dict) -> dict[str, dict]:
    return {"model": split_results["model"], **split_results["baselines"]}


def report_table(results: dict, split: str) -> str:
    """A markdown table: one row per scorer, full-ranking and sampled metrics as columns."""
    ks = results["settings"]["top_ks"]
    columns = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]
    sampled = ["hr@10", "ndcg@10"] if 10 in ks else [f"hr@{ks[-1]}", f"ndcg@{ks[-1]}"]
    header = ["scorer", *[c.upper() for c in columns]]
    header += [f"sampled {c.upper()}" for c in sampled]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in _scorers(results[split]).items():
        cells = [SCORER_LABELS.get(name, name)]
        cells += [f"{metrics['full'][c]:.4f}" for c in columns]
        cells += [f"{metrics['sampled'][c]:.4f}" for c in sampled]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(results: dict, run_dir: Path) -> Path:
    settings = results["settings"]
    splits = [name for name in ("valid", "test") if name in results]
    parts = [
        "# BERT4Rec evaluation",
        "",
        f"Data: `{settings['data_dir']}`. Full ranking over all movies"
        + (" except the session's own" if settings["exclude_seen"] else "")
        + f"; sampled: the target against {settings['sampled_negatives']} popularity-sampled negatives "
        f"(seed {settings['seed']}). Ties count against the target.",
    ]
    for split in splits:
        count = results[split]["model"]["full"]["count"]
        parts += ["", f"## {'Validation' if split == 'valid' else 'Test'} ({count:,} sequences)", "", report_table(results, split)]
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
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, (split, metric) in zip(axes[0], panels):
        values = [_scorers(results[split])[name]["full"].get(metric, np.nan) for name in names]
        axis.bar(range(len(names)), values, color=["tab:orange", "tab:gray", "tab:blue"][: len(names)])
        axis.set_xticks(range(len(names)), [SCORER_LABELS.get(n, n) for n in names], rotation=25, ha="right", fontsize=8)
        axis.set_title(f"{split} {metric.upper()} (full)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
