"""The ``t4r-app`` command line: each subcommand's typed arguments (``arguments.py``) go to one handler here,
which calls its stage's function and prints what came of it."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from t4r_app.arguments import (
    COMMANDS,
    EvaluateArgs,
    ExportArgs,
    GenerateArgs,
    CutArgs,
    ImportArgs,
    PipelineArgs,
    PredictArgs,
    PreprocessArgs,
    RecommendArgs,
    ServeArgs,
    TrainArgs,
    TuneArgs,
    add_arguments,
    from_namespace,
)
from t4r_app.config import describe_fields, load_config
from t4r_app.errors import USER_ERRORS, ConfigError, ExportError

_EXIT_USAGE = 2


class _UsageError(ValueError):
    """Arguments that parse but do not make sense together; exits with the usage code."""


def _generation_spec(users: int, movies: int, seed: int, shards: int = 4, mean_interactions: float = 40.0):
    from t4r_app.data.synthetic import GenerationSpec

    spec = GenerationSpec(users=users, movies=movies, seed=seed, shards=shards, mean_interactions=mean_interactions)
    try:
        spec.check()
    except ValueError as error:
        raise _UsageError(str(error)) from None
    return spec


def _print_generation(summary, output: Path) -> None:
    print(
        f"wrote {summary.records:,} records ({summary.interactions:,} interactions) of "
        f"{summary.users:,} users over {len(summary.shards)} shards to {Path(output) / 'recommendation'}"
        + (f"\nzip: {summary.zip}" if summary.zip else "")
    )


def _cmd_generate(args: GenerateArgs) -> int:
    from t4r_app.data.synthetic import generate_dataset

    spec = _generation_spec(args.users, args.movies, args.seed, args.shards, args.mean_interactions)
    _print_generation(generate_dataset(spec, args.output, make_zip=args.zip), args.output)
    return 0


def _cmd_import(args: ImportArgs) -> int:
    from t4r_app.data.importers import STATS_FILE, format_summary, import_log

    input_path, format_name = args.input, args.format
    if args.movielens_100k:
        from t4r_app.data.public_data import fetch_movielens_100k

        input_path, format_name = fetch_movielens_100k(), "recbole"
    stats = import_log(input_path, args.output, format_name, args.session_gap, args.shards, args.seed)
    print(format_summary(stats))
    print(f"counts in {Path(args.output) / STATS_FILE}; next: t4r-app preprocess --input {stats.zip} --output DATA_DIR")
    return 0


def _cmd_cut(args: CutArgs) -> int:
    from t4r_app.data.time_cut import STATS_FILE, cut_before, format_summary, timestamp_quantile

    on_bad_record = "skip" if args.skip_bad_records else "fail"
    cutoff = args.before if args.before is not None else timestamp_quantile(args.input, args.before_quantile, on_bad_record)
    stats = cut_before(args.input, args.output, cutoff, args.before_quantile, on_bad_record)
    print(format_summary(stats))
    print(f"counts in {Path(args.output) / STATS_FILE}; next: t4r-app preprocess --input {args.output} --output DATA_DIR")
    return 0


def _print_preprocessing(result) -> None:
    from t4r_app.data.preprocess import format_summary
    from t4r_app.data.preprocess_stats import STATS_FILE

    print(format_summary(result.stats))
    print(f"outputs in {result.output_dir} ({STATS_FILE} has every count)")


def _cmd_preprocess(args: PreprocessArgs) -> int:
    from t4r_app.data.preprocess import preprocess

    config = load_config(args.config, args.overrides)
    _print_preprocessing(preprocess(config, args.input, args.output, titles_path=args.titles, vocabulary_from=args.vocabulary_from))
    return 0


def _cmd_train(args: TrainArgs) -> int:
    from t4r_app.train import distributed
    from t4r_app.train.trainer import train

    if args.nproc > 1 and distributed.world_size() == 1:
        # The ranks run this same command, without --nproc, under torchrun.
        return distributed.launch(args.nproc, _without_option(sys.argv[1:], "--nproc"))
    config = load_config(_run_config(args), args.overrides)
    result = train(config, args.data, args.output, resume=args.resume, progress=not args.quiet, init_from=args.init_from)
    if not distributed.is_main_process():
        return 0
    _print_training(result)
    _print_validation_verdicts(args.output)
    return 0


def _print_training(result) -> None:
    print(
        f"best validation NDCG@10 {result.best_valid_ndcg:.4f} at epoch {result.best_epoch:g} "
        f"({result.epochs_run:g} epochs{', stopped early' if result.stopped_early else ''}; "
        f"{result.train_seconds:.0f} s on {result.device}, {result.sequences_per_second:,.0f} sequences/s)"
    )
    print(f"model in {result.run_dir / 'model'}; curves in {result.run_dir / 'training_curves.png'}")


def _without_option(arguments: list[str], option: str) -> list[str]:
    """``arguments`` without ``option VALUE`` or ``option=VALUE``."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == option:
            skip = True
        elif not argument.startswith(option + "="):
            kept.append(argument)
    return kept


def _print_validation_verdicts(run_dir: str) -> None:
    """Whether the finished model beats the baselines on validation (eval.json is left to evaluate)."""
    from t4r_app.evaluate.protocol import evaluate_results
    from t4r_app.evaluate.report import verdict_lines

    results = evaluate_results(run_dir, splits=("valid",), progress=False)
    print("\n".join(verdict_lines(results, "valid")))


def _run_config(args: TrainArgs) -> str | None:
    """--resume continues with the run's own config unless another is given."""
    if args.config is None and args.resume and (Path(args.output) / "config.yaml").is_file():
        return str(Path(args.output) / "config.yaml")
    return args.config


def _cmd_evaluate(args: EvaluateArgs) -> int:
    from t4r_app.evaluate.protocol import evaluate_run

    _print_evaluation(evaluate_run(args.run, data_dir=args.data, progress=not args.quiet), args.run)
    if args.against:
        from t4r_app.serve.update_check import compare_update, format_update_quality
        from t4r_app.model.saved_run import read_run_info

        new_data = args.data or read_run_info(args.run).data_dir
        print(f"\nagainst {args.against} (before the update):")
        print(format_update_quality(compare_update(args.against, args.run, read_run_info(args.against).data_dir, new_data)))
    return 0


def _print_evaluation(results, run_dir: Path) -> None:
    from t4r_app.evaluate.report import (
        REPORT_FILE,
        SPLIT_TITLES,
        comparison_table,
        history_table,
        report_table,
        slices_table,
        verdict_lines,
    )
    from t4r_app.evaluate.results import EVAL_FILE

    for split, title in SPLIT_TITLES.items():
        print(f"\n{title} ({results.splits[split].model.full.count:,} sequences)\n{report_table(results, split)}")
        print(f"\n{comparison_table(results, split)}")
        if slices := slices_table(results, split):
            print(f"\n{slices}")
        if histories := history_table(results, split):
            print(f"\n{histories}")
    print("\n" + "\n".join(verdict_lines(results, "valid")))
    if results.settings.repeat_baseline:
        print(results.settings.repeat_baseline)
    print(f"\nwrote {Path(run_dir) / EVAL_FILE} and {Path(run_dir) / REPORT_FILE}")


def _cmd_predict(args: PredictArgs) -> int:
    from t4r_app.serve.predict import predict

    summary = predict(
        args.run, args.input, args.output, args.top_k, args.exclude_seen, server=args.server, protocol=args.protocol,
        progress=not args.quiet,
    )
    if args.show:
        _show_predictions(summary.output, args.show)
    print(
        f"wrote top-{args.top_k} for {summary.sessions:,} sessions to {summary.output} in {summary.seconds:.1f} s "
        f"({summary.sessions_per_second:,.0f} sessions/s; {summary.unknown_movies:,} unknown movie ids left out, "
        f"{summary.fallbacks:,} sessions answered by popularity because no movie was known)"
    )
    print(_seen_note(summary.exclude_seen, args))
    if summary.catalogue_note:
        print(summary.catalogue_note, file=sys.stderr)
    return 0


def _seen_note(exclude_seen: bool, args: PredictArgs | RecommendArgs | ExportArgs) -> str:
    """Which seen-movie rule applied, and where it came from."""
    if args.exclude_seen is not None:
        source = "--exclude-seen" if args.exclude_seen else "--keep-seen"
    else:
        source = "the server's rule, set at export" if getattr(args, "server", None) else "the run's rule, see run.json"
    effect = "left out of" if exclude_seen else "kept in"
    return f"movies already in a session are {effect} its recommendations ({source})"


def _show_predictions(path: Path, count: int) -> None:
    import json

    with open(path) as handle:
        _print_recommendations([json.loads(line) for _, line in zip(range(count), handle)])


def _print_recommendations(rows: list[dict]) -> None:
    for row in rows:
        note = f" ({row['fallback']})" if row.get("fallback") else ""
        print(f"session {row['session_id']}{note}")
        for rank, (movie, title, score) in enumerate(zip(row["movieIndices"], row["titles"], row["scores"]), start=1):
            print(f"  {rank:>2}. {title:<40} movie {movie:<7} score {score:.4f}")


def _cmd_recommend(args: RecommendArgs) -> int:
    import json

    from t4r_app.serve.predict import make_recommender
    from t4r_app.serve.protocol import recommend_one

    recommender = make_recommender(args.run, args.server, args.protocol)
    result = recommend_one(recommender, args.session or [], args.top_k, args.exclude_seen, titles=args.titles or [])
    if result.unknown_movies:
        print(f"left out movie ids the model does not know: {', '.join(map(str, result.unknown_movies))}", file=sys.stderr)
    print(_seen_note(result.exclude_seen, args), file=sys.stderr)
    if recommender.catalogue_note:
        print(recommender.catalogue_note, file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"{'rank':>4}  {'title':<44} {'movie':>7}  score")
    for rank, (movie, title, score) in enumerate(zip(result.movies, result.titles, result.scores), start=1):
        print(f"{rank:>4}  {title[:44]:<44} {movie:>7}  {score:.4f}")
    return 0


def _cmd_export(args: ExportArgs) -> int:
    import json

    from t4r_app.serve.export import EXPORT_INFO, export_run, target_warning

    if args.into is not None:
        return _export_version(args)
    if args.server:
        raise ExportError("--server switches a live server to a new version: it goes with --into, not --output")
    repository = export_run(
        args.run, args.output, target=args.target, top_k=args.top_k, exclude_seen=args.exclude_seen, instances=args.instances
    )
    info = json.loads((repository / EXPORT_INFO).read_text())
    print(f"exported the Triton ensemble (workflow + traced model, top {args.top_k}, target {info['target']}) to {repository}")
    warning = target_warning(info["target"])
    if warning:
        print(f"t4r-app export: warning: {warning}", file=sys.stderr)
    print(_seen_note(info["exclude_seen"], args))
    print(f"serve it with: t4r-app serve --repository {repository}")
    return 0


def _export_version(args: ExportArgs) -> int:
    from t4r_app.serve.versions import add_version, switch

    version = add_version(args.run, args.into, exclude_seen=args.exclude_seen)
    print(f"wrote version {version} of {args.into} from {args.run} (target, top-k and instances as served)")
    if not args.server:
        print("a server started on it afterwards serves this version; to switch a running one, give --server HOST:PORT "
              "with --into next time")  # fmt: skip
        return 0
    print(f"switching the server at {args.server} to version {version} (the old one answers until it is ready) ...", flush=True)
    switch(args.server, args.into)
    print(f"the server at {args.server} answers with version {version}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _cmd_serve(args: ServeArgs) -> int:
    import signal

    from t4r_app.serve.triton_server import TritonServer

    server = TritonServer(
        args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port, log_path=args.log_file
    )
    print(f"starting tritonserver on {args.repository} (log: {server.log_path}) ...", flush=True)
    # Stop cleanly on Ctrl-C and on SIGTERM, also when started in the background (where the
    # shell leaves SIGINT ignored); the previous handlers come back afterwards.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            return _try_server(server, args) if args.try_sessions else _serve_until_stopped(server, args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve_until_stopped(server, args: ServeArgs) -> int:
    import time

    print(
        f"ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {args.host}:{args.metrics_port}; Ctrl-C stops it",
        flush=True,
    )
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        return 0
    print(f"tritonserver exited with code {server.process.returncode}:\n{server.log_tail()}", file=sys.stderr)
    return 1


def _try_server(server, args: ServeArgs) -> int:
    from t4r_app.serve.predict import read_sessions
    from t4r_app.serve.triton_client import TritonRecommender

    ids, sessions = read_sessions(args.try_sessions)
    client = TritonRecommender(server.http_url, args.run)
    try:
        answers = client.recommend(sessions, ids, top_k=client.served_top_k())
    finally:
        client.close()
    print(f"recommendations from tritonserver at {server.http_url}:")
    _print_recommendations([answer.to_json() for answer in answers])
    print("stopping tritonserver ...", flush=True)
    return 0


def _cmd_tune(args: TuneArgs) -> int:
    from t4r_app.train.tuning import BEST_CONFIG, CSV_FILE, tune

    config = load_config(args.config, args.overrides)
    trials, best = tune(config, args.data, args.output, progress=not args.quiet)
    print("mask_probability  last_item_share  valid NDCG@10  best epoch")
    for trial in trials:
        print(f"{trial.mask_probability:16g}  {trial.last_item_mask_share:15g}  {trial.valid_ndcg_at_10:13.4f}  {trial.best_epoch:10g}")
    print(
        f"best: mask_probability={best.model.mask_probability:g} last_item_mask_share={best.model.last_item_mask_share:g}; "
        f"wrote {Path(args.output) / CSV_FILE} and {Path(args.output) / BEST_CONFIG}"
    )
    return 0


def _cmd_pipeline(args: PipelineArgs) -> int:
    from t4r_app.pipeline import run_pipeline

    spec = _generation_spec(args.generate_users, args.generate_movies, args.seed) if args.generate_users else None
    config = load_config(args.config, args.overrides)
    printers = {
        "generate": lambda summary: _print_generation(summary, args.input),
        "preprocess": _print_preprocessing,
        "train": _print_training,
        "evaluate": lambda results: _print_evaluation(results, args.run),
    }
    run_pipeline(
        config,
        args.input,
        args.data,
        args.run,
        generate=spec,
        make_zip=args.zip,
        titles_path=args.titles,
        progress=not args.quiet,
        on_stage=lambda stage, result: printers[stage](result),
    )
    return 0


HANDLERS: dict[str, Callable[[Any], int]] = {
    "generate": _cmd_generate,
    "import": _cmd_import,
    "cut": _cmd_cut,
    "preprocess": _cmd_preprocess,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "recommend": _cmd_recommend,
    "export": _cmd_export,
    "serve": _cmd_serve,
    "tune": _cmd_tune,
    "pipeline": _cmd_pipeline,
}


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per argument dataclass in ``arguments.COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="t4r-app",
        description="BERT4Rec movie recommendations on NVIDIA Merlin (NVTabular + Transformers4Rec).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 't4r-app COMMAND --help' for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        epilog = getattr(command, "epilog", None)
        if getattr(command, "reads_config", False):
            epilog = "config keys (set in --config YAML or as key=value):\n" + describe_fields()
        subparser = commands.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            epilog=epilog,
            # Laid-out descriptions and epilogs keep their lines; plain paragraphs are wrapped.
            formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
        )
        add_arguments(subparser, command)
        subparser.set_defaults(arguments=command, command_parser=subparser)
    return parser


def parse_arguments(argv: list[str] | None = None):
    """The typed arguments of the command ``argv`` names; a usage error exits with code 2."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    arguments = from_namespace(namespace.arguments, namespace)
    problem = arguments.check() if hasattr(arguments, "check") else None
    if problem:
        namespace.command_parser.error(problem)
    return arguments


def main(argv: list[str] | None = None) -> int:
    # merlin probes for TensorFlow on import; this product is PyTorch-only.
    warnings.filterwarnings("ignore", message="Tensorflow dtype mappings")
    # The ETL runs NVTabular on CPU on purpose; its notice about that is not news to the user.
    warnings.filterwarnings("ignore", message="Initializing an NVTabular Dataset in CPU mode")
    args = parse_arguments(argv)
    try:
        return HANDLERS[args.name](args)
    except ConfigError as error:
        print(f"t4r-app {args.name}: config error: {error}", file=sys.stderr)
        return _EXIT_USAGE
    except _UsageError as error:
        print(f"t4r-app {args.name}: {error}", file=sys.stderr)
        return _EXIT_USAGE
    except USER_ERRORS as error:
        print(f"t4r-app {args.name}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
