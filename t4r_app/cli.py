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


def _generation_spec(users: int, movies: int, seed: int, **settings):
    """The generator's spec; ``settings`` left out keep GenerationSpec's defaults."""
    from t4r_app.input_layout.synthetic import GenerationSpec

    spec = GenerationSpec(users=users, movies=movies, seed=seed, **settings)
    try:
        spec.check()
    except ValueError as error:
        raise _UsageError(str(error)) from None
    return spec


def _cmd_generate(args: GenerateArgs) -> int:
    from t4r_app.input_layout.synthetic import generate_dataset

    spec = _generation_spec(args.users, args.movies, args.seed, shards=args.shards, mean_interactions=args.mean_interactions)
    print(generate_dataset(spec, args.output, make_zip=args.zip).describe())
    return 0


def _cmd_import(args: ImportArgs) -> int:
    from t4r_app.input_layout.importers import STATS_FILE, format_summary, import_log

    input_path, format_name = args.input, args.format
    if args.movielens_100k:
        from t4r_app.input_layout.public_data import fetch_movielens_100k

        input_path, format_name = fetch_movielens_100k(), "recbole"
    stats = import_log(input_path, args.output, format_name, args.session_gap, args.shards, args.seed)
    print(format_summary(stats))
    print(f"counts in {Path(args.output) / STATS_FILE}; next: t4r-app preprocess --input {stats.zip} --output DATA_DIR")
    return 0


def _cmd_cut(args: CutArgs) -> int:
    from t4r_app.input_layout.time_cut import STATS_FILE, cut_before, format_summary, timestamp_quantile

    on_bad_record = "skip" if args.skip_bad_records else "fail"
    cutoff = args.before if args.before is not None else timestamp_quantile(args.input, args.before_quantile, on_bad_record)
    stats = cut_before(args.input, args.output, cutoff, args.before_quantile, on_bad_record)
    print(format_summary(stats))
    print(f"counts in {Path(args.output) / STATS_FILE}; next: t4r-app preprocess --input {args.output} --output DATA_DIR")
    return 0


def _cmd_preprocess(args: PreprocessArgs) -> int:
    from t4r_app.data.preprocess import preprocess

    config = load_config(args.config, args.overrides)
    print(preprocess(config, args.input, args.output, titles_path=args.titles, vocabulary_from=args.vocabulary_from).describe())
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
    from t4r_app.evaluate.report import validation_verdicts

    print(result.describe())
    print(validation_verdicts(args.output))
    return 0


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


def _run_config(args: TrainArgs) -> str | None:
    """--resume continues with the run's own config unless another is given."""
    if args.config is None and args.resume and (Path(args.output) / "config.yaml").is_file():
        return str(Path(args.output) / "config.yaml")
    return args.config


def _cmd_evaluate(args: EvaluateArgs) -> int:
    from t4r_app.evaluate.protocol import evaluate_run
    from t4r_app.evaluate.report import console_report

    print(console_report(evaluate_run(args.run, data_dir=args.data, progress=not args.quiet), args.run))
    if args.against:
        from t4r_app.serve.update_check import compare_update, format_update_quality
        from t4r_app.model.saved_run import read_run_info

        new_data = args.data or read_run_info(args.run).data_dir
        print(f"\nagainst {args.against} (before the update):")
        print(format_update_quality(compare_update(args.against, args.run, read_run_info(args.against).data_dir, new_data)))
    return 0


def _cmd_predict(args: PredictArgs) -> int:
    from t4r_app.serve.predict import predict

    summary = predict(
        args.run, args.input, args.output, args.top_k, args.exclude_seen, server=args.server, transport=args.transport,
        progress=not args.quiet,
    )
    if args.show:
        _show_predictions(summary.output, args.show)
    print(summary.describe(args.top_k))
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

    from t4r_app.serve.contract import format_sessions

    with open(path) as handle:
        print(format_sessions(json.loads(line) for _, line in zip(range(count), handle)))


def _cmd_recommend(args: RecommendArgs) -> int:
    import json

    from t4r_app.serve.predict import make_recommender
    from t4r_app.serve.contract import format_ranking, recommend_one

    recommender = make_recommender(args.run, args.server, args.transport)
    result = recommend_one(recommender, args.session or [], args.top_k, args.exclude_seen, titles=args.titles or [])
    if result.unknown_movies:
        print(f"left out movie ids the model does not know: {', '.join(map(str, result.unknown_movies))}", file=sys.stderr)
    print(_seen_note(result.exclude_seen, args), file=sys.stderr)
    if recommender.catalogue_note:
        print(recommender.catalogue_note, file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(format_ranking(result))
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


def _cmd_serve(args: ServeArgs) -> int:
    from t4r_app.serve.triton_server import TritonServer, serve_until_stopped, stopped_by_signals

    server = TritonServer(
        args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port, log_path=args.log_file
    )
    print(f"starting tritonserver on {args.repository} (log: {server.log_path}) ...", flush=True)
    with stopped_by_signals(), server:
        if not args.try_sessions:
            return serve_until_stopped(server, args.metrics_port)
        _try_server(server, args)
        return 0


def _try_server(server, args: ServeArgs) -> None:
    from t4r_app.serve.predict import read_sessions
    from t4r_app.serve.contract import format_sessions
    from t4r_app.serve.triton_client import TritonRecommender

    ids, sessions = read_sessions(args.try_sessions)
    client = TritonRecommender(server.http_url, args.run)
    try:
        answers = client.recommend(sessions, ids, top_k=client.served_top_k())
    finally:
        client.close()
    print(f"recommendations from tritonserver at {server.http_url}:\n{format_sessions(a.to_json() for a in answers)}")
    print("stopping tritonserver ...", flush=True)


def _cmd_tune(args: TuneArgs) -> int:
    from t4r_app.train.tuning import format_trials, tune

    config = load_config(args.config, args.overrides)
    trials, best = tune(config, args.data, args.output, progress=not args.quiet)
    print(format_trials(trials, best, args.output))
    return 0


def _cmd_pipeline(args: PipelineArgs) -> int:
    from t4r_app.evaluate.report import console_report
    from t4r_app.pipeline import run_pipeline

    spec = _generation_spec(args.generate_users, args.generate_movies, args.seed) if args.generate_users else None
    config = load_config(args.config, args.overrides)

    def show(stage: str, result) -> None:
        print(console_report(result, args.run) if stage == "evaluate" else result.describe())

    run_pipeline(
        config,
        args.input,
        args.data,
        args.run,
        generate=spec,
        make_zip=args.zip,
        titles_path=args.titles,
        progress=not args.quiet,
        on_stage=show,
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
