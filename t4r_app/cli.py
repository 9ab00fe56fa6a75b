"""The ``t4r-app`` command line: each subcommand parses, loads the config, calls one function."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from t4r_app.config import describe_fields, load_config
from t4r_app.errors import ConfigError

_EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _config_command(commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that reads the config: --config, key=value overrides, every key in --help."""
    parser = commands.add_parser(
        name,
        help=help,
        description=description,
        epilog="config keys (set in --config YAML or as key=value):\n" + describe_fields(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_arguments(parser)
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (defaults apply to every key it leaves out)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides such as split.protocol=temporal or on_bad_record=skip",
    )


def _cmd_generate(args: argparse.Namespace) -> int:
    from t4r_app.data.synthetic import GenerationSpec, generate_dataset

    spec = GenerationSpec(
        users=args.users,
        movies=args.movies,
        seed=args.seed,
        shards=args.shards,
        mean_interactions=args.mean_interactions,
    )
    try:
        spec.check()
    except ValueError as error:
        print(f"t4r-app generate: {error}", file=sys.stderr)
        return _EXIT_USAGE
    summary = generate_dataset(spec, args.output, make_zip=args.zip)
    print(
        f"wrote {summary.records:,} records ({summary.interactions:,} interactions) of "
        f"{summary.users:,} users over {len(summary.shards)} shards to {Path(args.output) / 'recommendation'}"
        + (f"\nzip: {summary.zip}" if summary.zip else "")
    )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from t4r_app.data.importers import STATS_FILE, format_summary, import_log

    input_path, format_name = args.input, args.format
    if args.movielens_100k:
        from t4r_app.data.public_data import fetch_movielens_100k

        input_path, format_name = fetch_movielens_100k(), "recbole"
    stats = import_log(input_path, args.output, format_name, args.session_gap, args.shards, args.seed)
    print(format_summary(stats))
    print(f"counts in {Path(args.output) / STATS_FILE}; next: t4r-app preprocess --input {stats.zip} --output DATA_DIR")
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from t4r_app.data.preprocess import format_summary, preprocess

    config = load_config(args.config, args.overrides)
    result = preprocess(config, args.input, args.output, titles_path=args.titles)
    print(format_summary(result.stats))
    print(f"outputs in {result.output_dir} (stats.json has every count)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from t4r_app.train import distributed
    from t4r_app.train.trainer import train

    if args.nproc > 1 and distributed.world_size() == 1:
        # The ranks run this same command, without --nproc, under torchrun.
        return distributed.launch(args.nproc, _without_option(sys.argv[1:], "--nproc"))
    config = load_config(_run_config(args), args.overrides)
    result = train(config, args.data, args.output, resume=args.resume, progress=not args.quiet)
    if not distributed.is_main_process():
        return 0
    print(
        f"best validation NDCG@10 {result.best_valid_ndcg:.4f} at epoch {result.best_epoch:g} "
        f"({result.epochs_run:g} epochs{', stopped early' if result.stopped_early else ''}; "
        f"{result.train_seconds:.0f} s on {result.device}, {result.sequences_per_second:,.0f} sequences/s)"
    )
    print(f"model in {Path(args.output) / 'model'}; curves in {Path(args.output) / 'training_curves.png'}")
    _print_validation_verdicts(args.output)
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


def _print_validation_verdicts(run_dir: str) -> None:
    """Whether the finished model beats the baselines on validation (eval.json is left to evaluate)."""
    from t4r_app.evaluate.protocol import evaluate_results
    from t4r_app.evaluate.report import verdict_lines

    results = evaluate_results(run_dir, splits=("valid",), progress=False)
    print("\n".join(verdict_lines(results, "valid")))


def _run_config(args: argparse.Namespace) -> str | None:
    """--resume continues with the run's own config unless another is given."""
    if args.config is None and args.resume and (Path(args.output) / "config.yaml").is_file():
        return str(Path(args.output) / "config.yaml")
    return args.config


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from t4r_app.evaluate.protocol import evaluate_run
    from t4r_app.evaluate.report import REPORT_FILE, SPLIT_TITLES, comparison_table, report_table, slices_table, verdict_lines

    results = evaluate_run(args.run, data_dir=args.data, progress=not args.quiet)
    for split, title in SPLIT_TITLES.items():
        print(f"\n{title} ({results[split]['model']['full']['count']:,} sequences)\n{report_table(results, split)}")
        print(f"\n{comparison_table(results, split)}")
        if slices := slices_table(results, split):
            print(f"\n{slices}")
    print("\n" + "\n".join(verdict_lines(results, "valid")))
    print(f"\nwrote {Path(args.run) / 'eval.json'} and {Path(args.run) / REPORT_FILE}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from t4r_app.serve.predict import predict

    summary = predict(
        args.run, args.input, args.output, args.top_k, args.exclude_seen, server=args.server, protocol=args.protocol
    )
    if args.show:
        _show_predictions(summary.output, args.show)
    print(
        f"wrote top-{args.top_k} for {summary.sessions:,} sessions to {summary.output} "
        f"({summary.unknown_movies:,} unknown movie ids left out, {summary.fallbacks:,} sessions answered "
        "by popularity because no movie was known)"
    )
    print(_seen_note(summary.exclude_seen, args))
    return 0


def _seen_note(exclude_seen: bool, args: argparse.Namespace) -> str:
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


def _movie_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of movie ids") from None


def _cmd_recommend(args: argparse.Namespace) -> int:
    import json

    from t4r_app.errors import SessionError
    from t4r_app.serve.predict import make_recommender
    from t4r_app.serve.titles import find_movie

    recommender = make_recommender(args.run, args.server, args.protocol)
    session = list(args.session or [])
    session += [find_movie(title, recommender.title_of_movie) for title in args.titles or []]
    if not session:
        raise SessionError("the session is empty: give --session 12,45,7 or --titles 'Title (Year)' ...")
    result = recommender.recommend([session], top_k=args.top_k, exclude_seen=args.exclude_seen)[0]
    if result.unknown_movies:
        unknown = ", ".join(map(str, result.unknown_movies))
        if result.fallback:
            raise SessionError(f"none of the session's movies is known to the model (unknown ids: {unknown})")
        print(f"left out movie ids the model does not know: {unknown}", file=sys.stderr)
    print(_seen_note(result.exclude_seen, args), file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"{'rank':>4}  {'title':<44} {'movie':>7}  score")
    for rank, (movie, title, score) in enumerate(zip(result.movies, result.titles, result.scores), start=1):
        print(f"{rank:>4}  {title[:44]:<44} {movie:>7}  {score:.4f}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import json

    from t4r_app.serve.export import EXPORT_INFO, export_run, target_warning

    repository = export_run(args.run, args.output, target=args.target, top_k=args.top_k, exclude_seen=args.exclude_seen)
    info = json.loads((repository / EXPORT_INFO).read_text())
    print(f"exported the Triton ensemble (workflow + BERT4Rec, top {args.top_k}, target {info['target']}) to {repository}")
    warning = target_warning(info["target"])
    if warning:
        print(f"t4r-app export: warning: {warning}", file=sys.stderr)
    print(_seen_note(info["exclude_seen"], args))
    print(f"serve it with: t4r-app serve --repository {repository}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _cmd_serve(args: argparse.Namespace) -> int:
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


def _serve_until_stopped(server, args: argparse.Namespace) -> int:
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


def _try_server(server, args: argparse.Namespace) -> int:
    from t4r_app.errors import ServeError
    from t4r_app.serve.predict import read_sessions
    from t4r_app.serve.triton_client import TritonRecommender

    if not args.run:
        raise ServeError("--try-sessions needs --run (the RUN_DIR the repository was exported from)")
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


SEEN_RULE = (
    "Default: the run's rule, decided at training from serve.exclude_seen and recorded in RUN_DIR/run.json "
    "(auto: leave seen movies out when under 1%% of the training interactions repeat a movie already in "
    "their sequence, as on MovieLens where nobody rates a movie twice; keep them otherwise; runs from "
    "before the rule keep them)."
)


def _add_seen_arguments(parser: argparse.ArgumentParser, server_note: str = "") -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--exclude-seen",
        dest="exclude_seen",
        action="store_true",
        default=None,
        help="never recommend a movie already in the session. " + SEEN_RULE + server_note,
    )
    group.add_argument(
        "--keep-seen",
        dest="exclude_seen",
        action="store_false",
        default=None,
        help="let movies already in the session be recommended (overrides the run's rule)",
    )


SERVER_SEEN_NOTE = (
    " With --server the served ensemble's rule (set at export) applies; asking for the other one is an error."
)


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="HOST:PORT", help="ask this Triton server instead of loading the model here")
    parser.add_argument(
        "--protocol", choices=("http", "grpc"), help="protocol for --server (default: grpc on port 8001, else http)"
    )


def _cmd_tune(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t4r-app",
        description="BERT4Rec movie recommendations on NVIDIA Merlin (NVTabular + Transformers4Rec).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 't4r-app COMMAND --help' for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    generate = commands.add_parser(
        "generate",
        help="write a synthetic sessions dataset in the recommendation/ layout",
        description=(
            "Write recommendation/dataset/data-*.tfrecord and recommendation/movie_title_by_index.json "
            "under OUTPUT: users with tastes, Zipf popularity, taste-specific 'what comes next', "
            "sessions split by days, records shuffled across shards. Streams: memory stays flat "
            "whatever the size."
        ),
    )
    generate.add_argument("--output", required=True, help="folder to write into")
    generate.add_argument("--users", type=_positive_int, required=True, help="number of users")
    generate.add_argument("--movies", type=_positive_int, required=True, help="number of movies")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--shards", type=_positive_int, default=4, help="number of TFRecord shards (default 4)")
    generate.add_argument(
        "--mean-interactions", type=float, default=40.0, help="mean interactions per user (default 40)"
    )
    generate.add_argument("--zip", action="store_true", help="also write OUTPUT/recommandation.zip")
    generate.set_defaults(handler=_cmd_generate)

    import_ = commands.add_parser(
        "import",
        help="turn a public interaction log (MovieLens, RecBole) into the recommendation/ layout",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Read a public interaction log and write it in the layout `t4r-app preprocess` reads:

  OUTPUT/recommendation/dataset/data-*.tfrecord     one record per session
  OUTPUT/recommendation/movie_title_by_index.json   titles, when the log has them
  OUTPUT/recommandation.zip                         both of the above
  OUTPUT/import_stats.json                          counts that reconcile

formats (told from the file names, else from the first line; or give --format):
  movielens-100k  u.data + u.item            MovieLens 100K
  movielens-dat   ratings.dat + movies.dat   MovieLens 1M, 10M
  movielens-csv   ratings.csv + movies.csv   MovieLens 20M, 25M, latest
  recbole         NAME.inter + NAME.item     RecBole atomic files

Every rating is one interaction. Each user's interactions, in time order, are cut
into sessions at gaps longer than --session-gap; records are shuffled over the
shards. RecBole ids that are not plain integers are numbered in sorted order.
The titles file is optional.""",
        epilog="""\
examples:
  t4r-app import --movielens-100k --output data/ml-100k/raw
  t4r-app import --input ml-25m/ --output data/ml-25m/raw --session-gap 1800""",
    )
    source = import_.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="PATH", help="the interactions file, or a folder holding one")
    source.add_argument(
        "--movielens-100k",
        action="store_true",
        help="fetch MovieLens-100K from PyPI (RecBole's wheel, cached in $T4R_APP_CACHE or ~/.cache/t4r-app)",
    )
    import_.add_argument("--output", required=True, metavar="DIR", help="folder to write into")
    import_.add_argument(
        "--format",
        choices=("movielens-100k", "movielens-dat", "movielens-csv", "recbole"),
        help="the input's format (default: told from the file names, else the first line)",
    )
    import_.add_argument(
        "--session-gap",
        type=_positive_int,
        default=3600,
        metavar="SECONDS",
        help="start a new session after a gap longer than this (default 3600)",
    )
    import_.add_argument("--shards", type=_positive_int, default=4, help="number of TFRecord shards (default 4)")
    import_.add_argument("--seed", type=int, default=0, help="seed of the record shuffle (default 0)")
    import_.set_defaults(handler=_cmd_import)

    preprocess = _config_command(
        commands,
        "preprocess",
        help="turn TFRecord sessions into train/valid/test parquet sequences with NVTabular",
        description=(
            "Read the sessions (a zip, a folder, or a glob of .tfrecord files, plain or GZIP), check "
            "every record, and run the NVTabular workflow: encode movies, build time-ordered "
            "sequences, split them by protocol. Writes parquet with the merlin schema, the fitted "
            "workflow, an id mapping and stats.json to OUTPUT."
        ),
    )
    preprocess.add_argument("--input", required=True, help="recommandation.zip, a dataset folder, or a glob")
    preprocess.add_argument("--output", required=True, help="DATA_DIR to write the outputs into")
    preprocess.add_argument(
        "--titles", help="movie_title_by_index.json, when it is not beside the shards or in the zip"
    )
    preprocess.set_defaults(handler=_cmd_preprocess)

    train = _config_command(
        commands,
        "train",
        help="train BERT4Rec on preprocessed data with T4R's Trainer",
        description=(
            "Train BERT4Rec (masked-item modelling) on DATA_DIR/train, validating on DATA_DIR/valid every "
            "epoch; stops early when validation NDCG@10 stops improving and keeps the best model. Uses the "
            "GPU when there is one. Writes RUN_DIR/{model/, config.yaml, metrics.json, training_log.csv, "
            "training_curves.png, checkpoints/}. model.title_embeddings=init|feature also reads the movies' "
            "titles (all-MiniLM-L6-v2 vectors, encoded once and cached as DATA_DIR/title_vectors.npz)."
        ),
    )
    train.add_argument("--data", required=True, help="DATA_DIR written by `t4r-app preprocess`")
    train.add_argument("--output", required=True, help="RUN_DIR to write the run into")
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument(
        "--nproc",
        type=_positive_int,
        default=1,
        help="data-parallel training in N processes on this machine through torchrun: one per GPU (NCCL), "
        "or N CPU processes (gloo) sharing the cores. Each trains on its share of every epoch and validates on "
        "the whole validation set; rank 0 checkpoints and writes the run. Several machines: run torchrun yourself (README)",
    )
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a trained run and the baselines on validation and test",
        description=(
            "HR@k, NDCG@k and MRR for the model, MostPopular and a first-order Markov model (fitted on each "
            "sequence's whole training part), ranked three ways: over all movies ('full'), with the session's "
            "own movies left out ('full_unseen'), and the BERT4Rec paper's sampled protocol (100 "
            "popularity-sampled negatives). The model's NDCG@10 minus each baseline's comes with a paired "
            "bootstrap 95% interval, and a line says where the model does NOT beat a baseline on validation. "
            "Writes RUN_DIR/eval.json, RUN_DIR/report.md and RUN_DIR/eval_plot.png; settings come from the "
            "run's config (evaluate.*)."
        ),
    )
    evaluate.add_argument("--run", required=True, help="RUN_DIR written by `t4r-app train`")
    evaluate.add_argument("--data", help="DATA_DIR to evaluate on (default: the one the run was trained on)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(handler=_cmd_evaluate)

    predict = commands.add_parser(
        "predict",
        help="top-k next movies for sessions in a JSON-lines or parquet file",
        description=(
            'Reads sessions, one per line: {"session_id": ..., "movieIndices": [raw ids, oldest first]} '
            "(or a parquet file with those columns), appends [MASK] after each session's last movie and "
            'writes {"session_id", "movieIndices": [top-k raw ids], "scores", "titles"} per line. '
            "Unknown movie ids are left out and listed in 'unknown_movies'; a session with no known "
            "movie gets the most popular movies and 'fallback': 'most_popular'; long sessions keep "
            "their most recent max_seq_length - 1 movies. Each line records 'exclude_seen': whether the "
            "session's own movies were left out (see --exclude-seen)."
        ),
    )
    predict.add_argument("--run", required=True, help="RUN_DIR written by `t4r-app train`")
    predict.add_argument("--input", required=True, help="sessions .jsonl or .parquet")
    predict.add_argument("--output", required=True, help="predictions .jsonl to write")
    predict.add_argument("--top-k", type=_positive_int, default=10, help="recommendations per session (default 10)")
    _add_seen_arguments(predict, SERVER_SEEN_NOTE)
    predict.add_argument("--show", type=int, default=0, metavar="N", help="also print the first N sessions' recommendations")
    _add_server_arguments(predict)
    predict.set_defaults(handler=_cmd_predict)

    recommend = commands.add_parser(
        "recommend",
        help="top-k next movies for one session given on the command line",
        description=(
            "Prints a ranked table (rank, title, movie id, score) of the movies most likely to come next "
            "after the session. Titles match exactly, else ignoring case, else as the one title containing "
            "the text; an ambiguous or unknown title is an error listing candidates."
        ),
    )
    recommend.add_argument("--run", required=True, help="RUN_DIR written by `t4r-app train`")
    recommend.add_argument("--session", type=_movie_ids, metavar="ID,ID,...", help="raw movie ids, oldest first")
    recommend.add_argument("--titles", nargs="+", metavar="TITLE", help="movie titles, oldest first (after --session)")
    recommend.add_argument("--top-k", type=_positive_int, default=10, help="how many movies (default 10)")
    _add_seen_arguments(recommend, SERVER_SEEN_NOTE)
    recommend.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_server_arguments(recommend)
    recommend.set_defaults(handler=_cmd_recommend)

    export = commands.add_parser(
        "export",
        help="export a run as a Triton ensemble (NVTabular workflow + traced BERT4Rec)",
        description=(
            "Writes a Triton model repository with merlin-systems: the serving part of the run's NVTabular "
            "workflow (raw movie ids in, encoded and truncated sessions out) followed by the BERT4Rec model "
            "traced in eval mode, returning the top-k raw movie ids and their scores. Requests carry "
            "'movieIndices' as merlin ragged inputs (movieIndices__values INT64, movieIndices__offsets INT32), "
            "one or many sessions each; the answer is 'movie_ids' and 'scores', shape (sessions, k). "
            "Both targets run every step in Triton's python backend; gpu runs the model step on a GPU "
            "instance (KIND_GPU) and can be exported on a machine without one (with a warning) to serve elsewhere."
        ),
    )
    export.add_argument("--run", required=True, help="RUN_DIR written by `t4r-app train`")
    export.add_argument("--output", required=True, help="model repository folder to write (replaced if present)")
    export.add_argument(
        "--target", choices=("cpu", "gpu"), help="cpu: model on the CPU; gpu: model on a GPU instance (default: gpu where torch sees a GPU, else cpu)"
    )
    export.add_argument("--top-k", type=_positive_int, default=10, help="movies per answer (default 10)")
    _add_seen_arguments(export, " The server applies the rule baked in here to every request.")
    export.set_defaults(handler=_cmd_export)

    serve = commands.add_parser(
        "serve",
        help="run tritonserver on an exported repository until Ctrl-C",
        description=(
            "Starts the tritonserver on PATH (the Merlin container) or else the one in the nvidia-pytriton "
            "wheel, waits until it reports ready, prints the endpoints and stops it cleanly on Ctrl-C."
        ),
    )
    serve.add_argument("--repository", required=True, help="folder written by `t4r-app export`")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--http-port", type=_positive_int, default=8000, help="HTTP port (default 8000)")
    serve.add_argument("--grpc-port", type=_positive_int, default=8001, help="gRPC port (default 8001)")
    serve.add_argument("--metrics-port", type=_positive_int, default=8002, help="metrics port (default 8002)")
    serve.add_argument("--log-file", help="server log (default: beside the repository)")
    serve.add_argument(
        "--try-sessions", metavar="FILE", help="instead of waiting: ask the server for these sessions, print, stop"
    )
    serve.add_argument("--run", help="with --try-sessions: the RUN_DIR the repository was exported from (titles)")
    serve.set_defaults(handler=_cmd_serve)

    tune = _config_command(
        commands,
        "tune",
        help="grid-search the mask probability on validation",
        description=(
            "Train one model per value of tune.mask_probabilities (times tune.last_item_mask_shares when "
            "given) with early stopping, compare validation NDCG@10 only, and write OUTPUT/tune.csv, "
            "OUTPUT/tune.png and OUTPUT/best_config.yaml. An interrupted tune resumes its trials."
        ),
    )
    tune.add_argument("--data", required=True, help="DATA_DIR written by `t4r-app preprocess`")
    tune.add_argument("--output", required=True, help="folder for the trials and results")
    tune.add_argument("--quiet", action="store_true", help="no progress bars")
    tune.set_defaults(handler=_cmd_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    # merlin probes for TensorFlow on import; this product is PyTorch-only.
    warnings.filterwarnings("ignore", message="Tensorflow dtype mappings")
    # The ETL runs NVTabular on CPU on purpose; its notice about that is not news to the user.
    warnings.filterwarnings("ignore", message="Initializing an NVTabular Dataset in CPU mode")
    parser = build_parser()
    args = parser.parse_args(argv)
    from t4r_app.errors import USER_ERRORS

    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"t4r-app {args.command}: config error: {error}", file=sys.stderr)
        return _EXIT_USAGE
    except USER_ERRORS as error:
        print(f"t4r-app {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
