"""The ``t4r-app`` command line: each subcommand parses, loads the config, calls one function."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from t4r_app.config import ConfigError, describe_fields, load_config

_EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (defaults apply to every key it leaves out)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides such as split.protocol=temporal or on_bad_record=skip",
    )


def _cmd_generate(args: argparse.Namespace) -> int:
    from t4r_app.synthetic import GenerationSpec, generate_dataset

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


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from t4r_app.preprocess import format_summary, preprocess

    config = load_config(args.config, args.overrides)
    result = preprocess(config, args.input, args.output, titles_path=args.titles)
    print(format_summary(result.stats))
    print(f"outputs in {result.output_dir} (stats.json has every count)")
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

    preprocess = commands.add_parser(
        "preprocess",
        help="turn TFRecord sessions into train/valid/test parquet sequences with NVTabular",
        description=(
            "Read the sessions (a zip, a folder, or a glob of .tfrecord files, plain or GZIP), check "
            "every record, and run the NVTabular workflow: encode movies, build time-ordered "
            "sequences, split them by protocol. Writes parquet with the merlin schema, the fitted "
            "workflow, an id mapping and stats.json to OUTPUT."
        ),
        epilog="config keys (set in --config YAML or as key=value):\n" + describe_fields(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preprocess.add_argument("--input", required=True, help="recommandation.zip, a dataset folder, or a glob")
    preprocess.add_argument("--output", required=True, help="DATA_DIR to write the outputs into")
    preprocess.add_argument(
        "--titles", help="movie_title_by_index.json, when it is not beside the shards or in the zip"
    )
    _add_config_arguments(preprocess)
    preprocess.set_defaults(handler=_cmd_preprocess)
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
