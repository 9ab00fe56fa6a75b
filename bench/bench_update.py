"""The daily update measured on MovieLens-100K cut by time: a warm start against training from scratch.

Day 1 is every interaction before the 90% quantile of the timestamps (``t4r-app cut``); day 2
is the whole log. Through the product's own commands:

1. ``cut`` -> ``preprocess`` day 1; ``preprocess`` day 2 ``--vocabulary-from`` day 1 (once);
2. per seed: ``train`` day 1 (yesterday's model); ``train`` day 2 from scratch; ``train`` day 2
   ``--init-from`` the day-1 run (the warm start, ``train.min_epochs=0``: it starts past the
   plateau that the minimum guards against from scratch); ``evaluate`` both day-2 runs;
   ``compare_update`` of the day-1 model and each day-2 model on the users who came back.

Every run uses the shipped defaults with ``model.title_embeddings=feature`` (what the update
path recommends: a new movie starts from its title), the seed, and no time budget (early
stopping as shipped), so that epochs and seconds are both recorded.

The goal (issue 20): the warm start reaches the from-scratch day-2 validation NDCG@10, less
one standard deviation over the seeds, in at most 25% of the from-scratch training time. The
time to reach it is read from each warm run's ``training_log.csv`` (``elapsed_s`` at the first
validation at or above the target); it is compared with the whole from-scratch run (what a
user pays today) and with its time to its best epoch. New movies (first watched on day 2) are
a slice of ``evaluate``: their HR@10 for each model against popularity and popularity by
similar titles. ``--jobs 2`` runs two trainings at a time with one torch thread each. Not a
test: run it on an idle machine (tens of minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from threading import Lock

from bench.bench_quality import DEFAULT_CONFIG, app, raw_input, summary
from bench.common import commit, write_report

RESULT = Path(__file__).resolve().parent / "results" / "update.json"
OVERRIDES = ["model.title_embeddings=feature"]
WARM_OVERRIDES = ["train.min_epochs=0"]
GOAL_SHARE = 0.25
REUSED: list[str] = []  # runs trained by an earlier invocation on the same --work
SLICE_SCORERS = ("model", "most_popular", "title_popularity")


def prepare(work: Path, quantile: float) -> tuple[Path, Path]:
    """Day-1 and day-2 DATA_DIRs (day 2 keeps day 1's ids), made once."""
    raw = raw_input("ml-100k", work, Path())
    day1_raw, day1, day2 = work / "day1-raw", work / "day1", work / "day2"
    if not (day1 / "stats.json").is_file():
        app("cut", "--input", str(raw), "--output", str(day1_raw), "--before-quantile", str(quantile))
        app("preprocess", "--config", str(DEFAULT_CONFIG), "--input", str(day1_raw), "--output", str(day1))
    if not (day2 / "stats.json").is_file():
        app("preprocess", "--config", str(DEFAULT_CONFIG), "--input", str(raw), "--output", str(day2),
            "--vocabulary-from", str(day1))
    from t4r_app.data.title_vectors import load_title_vectors
    from t4r_app.model.architecture import vocabulary_size
    from t4r_app.model.saved_run import load_schema

    for data in (day1, day2):  # encoded once here, not by two trainings at the same time
        load_title_vectors(data, vocabulary_size(load_schema(data / "train")), progress=False)
    return day1, day2


def train(data: Path, run_dir: Path, seed: int, *extra: str) -> None:
    """One training run; a run that finished in an earlier invocation on the same --work is reused
    (and listed in the report)."""
    if (run_dir / "metrics.json").is_file():
        REUSED.append(run_dir.name)
        return
    shutil.rmtree(run_dir, ignore_errors=True)  # a run killed midway starts again
    app("train", "--config", str(DEFAULT_CONFIG), "--data", str(data), "--output", str(run_dir), "--quiet",
        *OVERRIDES, f"seed={seed}", *extra, threads=1, log=run_dir.with_suffix(".train.log"))


def validation_log(run_dir: Path) -> list[dict]:
    """(epoch, elapsed seconds, validation NDCG@10) of every validation of the run."""
    with open(run_dir / "training_log.csv") as handle:
        return [{"epoch": float(row["epoch"]), "elapsed_s": float(row["elapsed_s"]), "ndcg": float(row["valid_ndcg@10"])}
                for row in csv.DictReader(handle) if row["valid_ndcg@10"]]


def run_values(run_dir: Path) -> dict:
    """Training figures from metrics.json and the log, test figures from evaluate."""
    from t4r_app.evaluate.results import EvaluationResults

    app("evaluate", "--run", str(run_dir), "--quiet", threads=1, log=run_dir.with_suffix(".eval.log"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = validation_log(run_dir)
    best = max(log, key=lambda row: row["ndcg"])
    test = EvaluationResults.load(run_dir).splits["test"]
    values = {
        "train_seconds": metrics["train_seconds"],
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "seconds_to_best": best["elapsed_s"],
        "valid_full_ndcg@10": metrics["best_valid_ndcg"],
        "test_full_ndcg@10": test.model.full.ndcg[10],
        "test_full_unseen_ndcg@10": test.model.full_unseen.ndcg[10],
    }
    for name, scorer in (("markov", test.baselines["markov"]), ("most_popular", test.baselines["most_popular"])):
        values[f"{name}_test_full_ndcg@10"] = scorer.full.ndcg[10]
    new = test.slices.get("new")
    if new is not None and new.rows:
        values["test_new_movie_targets"] = new.rows
        for name in SLICE_SCORERS:
            if name in new.scorers:  # title_popularity: only with title features
                values[f"{name}_test_new_full_hr@10"] = new.scorers[name].full.hr[10]
    return values


def time_to(log: list[dict], target: float) -> dict:
    """The first validation at or above ``target``: its epoch and elapsed seconds (None when never)."""
    reached = next((row for row in log if row["ndcg"] >= target), None)
    return {"epoch": reached["epoch"], "seconds": reached["elapsed_s"]} if reached else {"epoch": None, "seconds": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work" / "update")
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--quantile", type=float, default=0.9, help="day 1 ends at this quantile of the timestamps")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time, one torch thread each")
    parser.add_argument("--extra", nargs="*", default=[], help="more key=value overrides for every run (a quick check)")
    parser.add_argument("--warm-extra", nargs="*", default=[],
                        help="more key=value overrides for the warm starts only (e.g. a lower learning rate); the "
                             "runs already finished in --work (day 1, from scratch) are reused")
    args = parser.parse_args()
    measured = commit()
    day1, day2 = prepare(args.work, args.quantile)
    runs = args.work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    warm_name = "warm" + "".join("-" + item.split(".", 1)[-1].replace("=", "") for item in args.warm_extra)

    def run_path(kind: str, seed: int) -> Path:
        return runs / f"{warm_name if kind == 'warm' else kind}-seed{seed}"
    values: dict[tuple[str, int], dict] = {}
    lock = Lock()

    def day1_then_warm(seed: int, pool: ThreadPoolExecutor, pending: list[Future]) -> None:
        train(day1, runs / f"day1-seed{seed}", seed, *args.extra)
        with lock:
            pending.append(pool.submit(one, "warm", seed))

    def one(kind: str, seed: int) -> None:
        run_dir = run_path(kind, seed)
        if kind == "scratch":
            train(day2, run_dir, seed, *args.extra)
        else:
            train(day2, run_dir, seed, *WARM_OVERRIDES, *args.extra, *args.warm_extra,
                  "--init-from", str(runs / f"day1-seed{seed}"))
        result = run_values(run_dir)
        from t4r_app.serve.update_check import compare_update

        result["update"] = asdict(compare_update(runs / f"day1-seed{seed}", run_dir, day1, day2))
        with lock:
            values[(kind, seed)] = result
        print(f"{kind} seed {seed}: valid NDCG@10 {result['valid_full_ndcg@10']:.4f} after {result['epochs_run']:g} epochs, "
              f"{result['train_seconds']:.0f} s", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        pending: list[Future] = []
        for seed in args.seeds:
            pending.append(pool.submit(day1_then_warm, seed, pool, pending))
            pending.append(pool.submit(one, "scratch", seed))
        while pending:
            with lock:
                future = pending.pop(0)
            future.result()

    scratch = [values[("scratch", seed)] for seed in args.seeds]
    warm = [values[("warm", seed)] for seed in args.seeds]
    scratch_valid = [run["valid_full_ndcg@10"] for run in scratch]
    spread = statistics.stdev(scratch_valid) if len(scratch_valid) > 1 else 0.0
    target = statistics.fmean(scratch_valid) - spread
    reached = [time_to(validation_log(run_path("warm", seed)), target) for seed in args.seeds]
    scratch_seconds = statistics.fmean(run["train_seconds"] for run in scratch)
    if all(r["seconds"] is not None for r in reached):
        warm_seconds = statistics.fmean(r["seconds"] for r in reached)
        share = warm_seconds / scratch_seconds
        share_of_best = warm_seconds / statistics.fmean(run["seconds_to_best"] for run in scratch)
        epochs_share = statistics.fmean(r["epoch"] for r in reached) / statistics.fmean(run["epochs_run"] for run in scratch)
    else:
        warm_seconds = share = share_of_best = epochs_share = None
    cut = json.loads((args.work / "day1-raw" / "cut_stats.json").read_text())
    day2_stats = json.loads((day2 / "stats.json").read_text())
    report = {
        "data": f"MovieLens-100K (RecBole 1.2.1 wheel), sessions cut at 1 h; day 1 = interactions before the "
                f"{args.quantile:g} quantile of the timestamps, day 2 = all",
        "commit": measured,
        "seeds": args.seeds,
        "overrides": OVERRIDES + args.extra,
        "warm_overrides": WARM_OVERRIDES + args.warm_extra,
        "reused_runs": sorted(REUSED),  # trained by an earlier invocation on the same --work (same seeds and settings)
        "cut": cut,
        "day2_items_new": day2_stats.get("items_new"),
        "target_valid_ndcg@10": round(target, 4),
        "target_rule": "mean from-scratch day-2 validation NDCG@10 minus its standard deviation over the seeds",
        "warm_reached": reached,
        "warm_seconds_to_target": round(warm_seconds, 1) if warm_seconds is not None else None,
        "scratch_train_seconds": round(scratch_seconds, 1),
        "share_of_scratch_time": round(share, 3) if share is not None else None,
        "share_of_scratch_time_to_best": round(share_of_best, 3) if share_of_best is not None else None,
        "share_of_scratch_epochs": round(epochs_share, 3) if epochs_share is not None else None,
        "goal_share": GOAL_SHARE,
        "goal_met": share is not None and share <= GOAL_SHARE,
        "scratch": summary([{k: v for k, v in run.items() if k != "update"} for run in scratch]),
        "warm": summary([{k: v for k, v in run.items() if k != "update"} for run in warm]),
        "day1": summary([{key: value for key, value in json.loads((runs / f"day1-seed{seed}" / "metrics.json").read_text()).items()
                          if key in ("train_seconds", "epochs_run", "best_epoch", "best_valid_ndcg")} for seed in args.seeds]),
        "update_check_scratch": summary([run["update"] for run in scratch]),
        "update_check_warm": summary([run["update"] for run in warm]),
    }
    write_report(report, args.output)
    print(markdown(report))


def markdown(report: dict) -> str:
    """The README's "Daily update" table."""
    def cell(side: str, key: str) -> str:
        value = report[side].get(key)
        return f"{value['mean']:.4f} ± {value['sd']:.4f}" if value else "n/a"

    def count(side: str, key: str) -> str:
        return f"{report[side][key]['mean']:.0f}"

    reached = report["warm_reached"]
    to_target = " / ".join("never" if r["seconds"] is None else f"{r['seconds']:.0f}" for r in reached)
    check = {side: report[f"update_check_{side}"] for side in ("scratch", "warm")}
    lines = [
        f"{report['data']}; {len(report['seeds'])} seeds, shipped defaults + {' '.join(report['overrides'])}, "
        f"commit {report['commit']}. Target: {report['target_rule']} = {report['target_valid_ndcg@10']:.4f}. "
        f"Baselines on day-2 test (NDCG@10 all): Markov {cell('scratch', 'markov_test_full_ndcg@10')}, "
        f"MostPopular {cell('scratch', 'most_popular_test_full_ndcg@10')}.",
        "",
        "| day-2 model | epochs (best) | train s | s to target, per seed | valid NDCG@10 | test NDCG@10 all | "
        "test NDCG@10 unseen | new-movie targets: HR@10 model / popularity / by similar titles | "
        "users who came back: NDCG@10 served day-1 → this |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for side, label, seconds in (("scratch", "from scratch", ""),
                                 ("warm", f"warm start (--init-from day 1; {' '.join(report['warm_overrides'])})", to_target)):
        new_hr = " / ".join(cell(side, f"{name}_test_new_full_hr@10") for name in SLICE_SCORERS)
        lines.append(
            f"| {label} | {count(side, 'epochs_run')} ({count(side, 'best_epoch')}) | {count(side, 'train_seconds')} | "
            f"{seconds} | {cell(side, 'valid_full_ndcg@10')} | {cell(side, 'test_full_ndcg@10')} | "
            f"{cell(side, 'test_full_unseen_ndcg@10')} | {new_hr} | "
            f"{check[side]['old_ndcg']['mean']:.4f} → {check[side]['new_ndcg']['mean']:.4f} |"
        )
    got = [r for r in reached if r["seconds"] is not None]
    if report["share_of_scratch_time"] is not None:
        verdict = (f"{report['share_of_scratch_time']} of the from-scratch training time "
                   f"({report['share_of_scratch_time_to_best']} of its time to its best epoch; "
                   f"{report['share_of_scratch_epochs']} of its epochs)")
    else:
        epochs = ", ".join(f"{r['epoch']:.0f}" for r in got)
        verdict = f"reached by {len(got)} of {len(reached)} seeds" + (f", after {epochs} epochs" if got else "")
    lines += ["", f"Warm start to the target: {verdict}; goal ≤ {report['goal_share']:.0%} of the from-scratch time "
                  f"({report['scratch_train_seconds']:.0f} s) for every seed: {'met' if report['goal_met'] else 'not met'}. "
                  f"{report['cut']['titles_read'] - report['cut']['titles_written']} movies first watched on day 2; "
                  f"{report['scratch']['test_new_movie_targets']['mean']:.0f} test targets among them."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
