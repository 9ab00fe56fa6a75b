"""Quality benchmark on real data: MovieLens-100K, the shipped defaults and each lever, against the baselines.

``--dataset ecommerce`` runs the default and SASRec instead on a generated catalogue 25 times
larger with far shorter histories, 30 minutes of training each.

MovieLens-100K comes from the package registry (RecBole's wheel bundles it; nothing is
installed) and goes through the product's own path: ``import`` (sessions cut at a one-hour
gap, shuffled over four shards) -> ``preprocess`` (leave-one-out) -> ``train`` -> ``evaluate``.

Each variant is the shipped ``configs/default.yaml`` with a few overrides: the default itself,
the default with one lever turned off (an ablation), SASRec, the defaults this project
shipped before (all levers off, window 200), the two ways to use titles (``model.title_embeddings``)
and a cold-start run that withholds 10% of the movies from training (``train.withhold_movies``). Every variant trains under the same time budget
(``--budget``, seconds of training) and keeps its best validation checkpoint. For each: training
seconds, epoch of the best validation, validation and test NDCG@10 and HR@10 over all movies
(``full``) and with the session's own movies left out (``full_unseen``), and MostPopular and
Markov from the same evaluation; per test slice (``rare``: targets among the least-watched 20%
of movies, ``cold``: targets never trained on) the same for every scorer, title_popularity
(popularity by similar titles) included where the run uses titles. ``--title-encoding`` also
times encoding 40,000 titles.

``--jobs 2`` trains two variants at a time with one torch thread each (the machine has two
cores): the same budget then buys each variant one core, not two. Writes JSON (``--output``)
and prints a markdown table. Not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import write_report
from t4r_app.evaluate.results import EvaluationResults

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
LEVERS_OFF = [
    "train.window_stride=0",
    "model.seen_item_weight=false",
]
REFERENCE_HEAD = ["model.output_transform=true", "model.output_bias=true"]
VARIANTS: dict[str, list[str]] = {
    "default (bert4rec)": [],
    "sasrec": ["model.architecture=sasrec"],
    "no sliding windows": ["train.window_stride=0"],
    "4 fresh maskings per epoch": ["train.copies_per_epoch=4"],
    "exact masking": ["model.masking=exact"],
    "reference head (transform, bias)": REFERENCE_HEAD,
    "exact masking + reference head": ["model.masking=exact", *REFERENCE_HEAD],
    "no seen-item weight": ["model.seen_item_weight=false"],
    "title init": ["model.title_embeddings=init"],
    "title feature": ["model.title_embeddings=feature"],
    "cold start: title feature, 10% of movies withheld": ["model.title_embeddings=feature", "train.withhold_movies=0.1"],
    # A second seed of the default and of title features: how far two runs of one setting differ.
    "default, seed 2": ["seed=2"],
    "title feature, seed 2": ["model.title_embeddings=feature", "seed=2"],
    "previous defaults (window 200, levers off)": [
        *LEVERS_OFF,
        "preprocess.max_seq_length=200",
        "model.mask_probability=0.2",
        "train.learning_rate=0.001",
        "model.hidden_dropout=0.2",
        "model.attention_dropout=0.2",
        "train.min_epochs=0",
        "train.patience=10",
    ],
}
PROTOCOLS = ("full", "full_unseen")
# The metrics each row records, under the names bench/results/*.json has always used.
ROW_METRICS = {"ndcg@10": lambda metrics: metrics.ndcg[10], "hr@10": lambda metrics: metrics.hr[10]}
# An e-commerce-like catalogue: 25x MovieLens-100K's items, sessions a tenth as long.
ECOMMERCE = (31_000, 23_700, 8)
DATASETS = {
    "ml-100k": ("MovieLens-100K (RecBole 1.2.1 wheel), sessions cut at 1 h, leave-one-out", VARIANTS, 740.0),
    "ecommerce": (
        f"generated: {ECOMMERCE[0]:,} users, {ECOMMERCE[1]:,} items, {ECOMMERCE[2]} interactions per user on average",
        {name: VARIANTS[name] for name in ("default (bert4rec)", "sasrec")},
        1800.0,
    ),
}


def app(*arguments: str, threads: int | None = None, log: Path | None = None) -> None:
    environment = dict(os.environ)
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "t4r_app", *arguments]
    with open(log, "w") if log else open(os.devnull, "w") as output:
        subprocess.run(command, check=True, env=environment, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)


def window_of(overrides: list[str]) -> int:
    from t4r_app.config import load_config

    return load_config(DEFAULT_CONFIG, overrides).preprocess.max_seq_length


def prepare_data(dataset: str, work: Path, variants: dict[str, list[str]]) -> dict[int, Path]:
    """The raw data made once, preprocessed once per window the variants use."""
    raw = work / "raw"
    if not (raw / "recommandation.zip").is_file():
        if dataset == "ml-100k":
            from t4r_app.data.public_data import fetch_movielens_100k

            app("import", "--input", str(fetch_movielens_100k()), "--format", "recbole", "--output", str(raw))
        else:
            users, movies, mean = ECOMMERCE
            app("generate", "--output", str(raw), "--users", str(users), "--movies", str(movies),
                "--mean-interactions", str(mean), "--seed", "11", "--zip")
    data = {}
    for window in sorted({window_of(overrides) for overrides in variants.values()}):
        data[window] = work / f"data-{window}"
        if not (data[window] / "stats.json").is_file():
            app("preprocess", "--config", str(DEFAULT_CONFIG), "--input", str(raw / "recommandation.zip"),
                "--output", str(data[window]), f"preprocess.max_seq_length={window}")
    return data


def run_variant(
    name: str, overrides: list[str], data: Path, work: Path, budget: float, threads: int, evaluate_only: bool = False
) -> dict:
    run_dir = work / "runs" / name.split(" (")[0].replace(" ", "-")
    wall = None
    if not evaluate_only:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        app("train", "--config", str(DEFAULT_CONFIG), "--data", str(data), "--output", str(run_dir), "--quiet",
            *overrides, f"train.time_budget_s={budget}", threads=threads, log=run_dir.with_suffix(".train.log"))
        wall = round(time.perf_counter() - started, 1)
    elif not (run_dir / "model").is_dir():
        raise SystemExit(f"--evaluate-only: {run_dir} has no trained model; run the variant without it first")
    app("evaluate", "--run", str(run_dir), "--quiet", threads=threads, log=run_dir.with_suffix(".eval.log"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    results = EvaluationResults.load(run_dir)
    row = {
        "variant": name,
        "overrides": overrides,
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall,
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
    }
    splits = {split: results.splits[split] for split in ("valid", "test")}
    row.update(_row_values({split: values.model for split, values in splits.items()}, PROTOCOLS))
    row["baselines"] = {
        name: _row_values({split: values.baselines[name] for split, values in splits.items()}, PROTOCOLS)
        for name in splits["test"].baselines
    }
    row["test_slices"] = {
        slice_name: {"rows": values.rows, **{
            scorer_name: {
                f"{protocol}_{metric}": round(value(ranking), 4)
                for protocol, ranking in scorer.by_protocol().items() for metric, value in ROW_METRICS.items()
            }
            for scorer_name, scorer in values.scorers.items()}}
        for slice_name, values in splits["test"].slices.items()
    }
    print(f"{name}: test NDCG@10 {row['test_full_ndcg@10']:.4f} all, {row['test_full_unseen_ndcg@10']:.4f} unseen "
          f"({metrics['train_seconds']:.0f} s, best epoch {metrics['best_epoch']:g})", flush=True)
    return row


def _row_values(by_split: dict, protocols: tuple[str, ...]) -> dict[str, float]:
    """``{split}_{protocol}_{metric}``: one scorer's ROW_METRICS per split and protocol, rounded."""
    return {
        f"{split}_{protocol}_{metric}": round(value(scorer.protocol(protocol)), 4)
        for split, scorer in by_split.items() for protocol in protocols for metric, value in ROW_METRICS.items()
    }


def markdown(report: dict) -> str:
    lines = [
        "| variant | train s | best epoch | valid NDCG@10 all / unseen | test NDCG@10 all / unseen | test HR@10 all / unseen |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["variants"]:
        lines.append(
            f"| {row['variant']} | {row['train_seconds']:.0f} | {row['best_epoch']:g} | "
            f"{row['valid_full_ndcg@10']:.4f} / {row['valid_full_unseen_ndcg@10']:.4f} | "
            f"{row['test_full_ndcg@10']:.4f} / {row['test_full_unseen_ndcg@10']:.4f} | "
            f"{row['test_full_hr@10']:.4f} / {row['test_full_unseen_hr@10']:.4f} |"
        )
    for name, values in report["variants"][0]["baselines"].items():
        lines.append(
            f"| {name} | | | {values['valid_full_ndcg@10']:.4f} / {values['valid_full_unseen_ndcg@10']:.4f} | "
            f"{values['test_full_ndcg@10']:.4f} / {values['test_full_unseen_ndcg@10']:.4f} | "
            f"{values['test_full_hr@10']:.4f} / {values['test_full_unseen_hr@10']:.4f} |"
        )
    slice_lines = ["", "| variant | test slice (rows) | scorer | NDCG@10 all / unseen | HR@10 all / unseen | HR@10 among cold |",
                   "|---|---|---|---|---|---|"]
    for row in report["variants"]:
        for slice_name, values in row.get("test_slices", {}).items():
            for scorer, metrics in values.items():
                if scorer == "rows":
                    continue
                among_cold = f"{metrics['among_cold_hr@10']:.4f}" if "among_cold_hr@10" in metrics else ""
                slice_lines.append(
                    f"| {row['variant']} | {slice_name} ({values['rows']}) | {scorer} | "
                    f"{metrics['full_ndcg@10']:.4f} / {metrics['full_unseen_ndcg@10']:.4f} | "
                    f"{metrics['full_hr@10']:.4f} / {metrics['full_unseen_hr@10']:.4f} | {among_cold} |"
                )
    if len(slice_lines) > 3:
        lines += slice_lines
    if "title_encoding" in report:
        encoding = report["title_encoding"]
        lines += ["", f"Encoding {encoding['titles']:,} titles: {encoding['seconds']:.1f} s on {encoding['torch_threads']} threads."]
    return "\n".join(lines)


def time_title_encoding(count: int = 40_000) -> dict:
    """Seconds to encode ``count`` distinct generated titles, the encoder's own load included."""
    import torch

    from t4r_app.data.synthetic import movie_title
    from t4r_app.data.title_vectors import encode_titles

    titles = [movie_title(movie) for movie in range(count)]
    started = time.perf_counter()
    encode_titles(titles, progress=False)
    return {"titles": count, "seconds": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml-100k")
    parser.add_argument("--work", help="scratch folder for data and runs (default bench/work/quality-DATASET)")
    parser.add_argument("--output", help="default bench/results/quality.json (ml-100k), quality-ecommerce.json")
    parser.add_argument("--budget", type=float, help="seconds of training per variant (ml-100k 740, ecommerce 1800)")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once (one torch thread each when > 1)")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all); their rows replace those in --output")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="re-evaluate the variants' existing runs (after a change to evaluation) instead of training")
    parser.add_argument("--title-encoding", action="store_true", help="also time encoding 40,000 titles (alone, all cores)")
    args = parser.parse_args()
    description, dataset_variants, budget = DATASETS[args.dataset]
    budget = args.budget or budget
    output = Path(args.output or ("bench/results/quality.json" if args.dataset == "ml-100k" else "bench/results/quality-ecommerce.json"))
    work = Path(args.work or f"bench/work/quality-{args.dataset}").resolve()
    variants = {name: overrides for name, overrides in dataset_variants.items() if not args.only or name in args.only}
    data = prepare_data(args.dataset, work, variants)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(run_variant, name, overrides, data[window_of(overrides)], work, budget, threads, args.evaluate_only)
            for name, overrides in variants.items()
        ]
        rows = [future.result() for future in futures]
    import torch

    report = {
        "data": description,
        "machine": {"cpus": os.cpu_count(), "jobs": args.jobs, "torch_threads_per_job": threads,
                    "python": platform.python_version(), "torch": torch.__version__},
        "budget_seconds": budget,
        "variants": rows,
    }
    if args.title_encoding:
        report["title_encoding"] = time_title_encoding()
    if args.only and output.is_file():
        # A partial rerun replaces its own rows and keeps the others of the last full run.
        previous = json.loads(output.read_text())
        kept = [row for row in previous["variants"] if row["variant"] not in variants]
        earlier = {row["variant"]: row for row in previous["variants"]}
        for row in rows:  # --evaluate-only keeps the training run's wall time
            if row["wall_seconds"] is None and row["variant"] in earlier:
                row["wall_seconds"] = earlier[row["variant"]].get("wall_seconds")
        if "title_encoding" in previous:
            report.setdefault("title_encoding", previous["title_encoding"])
        order = list(dataset_variants)
        report["variants"] = sorted(kept + rows, key=lambda row: order.index(row["variant"]) if row["variant"] in order else len(order))
    print(markdown(report))
    write_report(report, output)


if __name__ == "__main__":
    main()
