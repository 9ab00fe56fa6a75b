"""Typed command-line arguments: one dataclass per ``t4r-app`` command, argparse built from its fields.

A field's type decides how its flag parses (``str``, ``int``, ``float``, ``bool`` as a switch,
``bool | None`` as a pair of opposite switches, ``list[...]`` as several values); its metadata
carries the help text. Options shared by several commands (the config, the seen-movie rule,
``--server``) are mixins, so each is written once. Importing this module loads nothing heavy:
``t4r-app --help`` and a client-only command stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from t4r_app.input_layout.input_defaults import MEAN_INTERACTIONS, SESSION_GAP_S, SHARDS


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def movie_id_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of movie ids") from None


def option(
    help: str,
    default: Any = MISSING,
    *,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    negative: tuple[str, str] | None = None,
    one_of: str | None = None,
    positional: bool = False,
    factory: Callable[[], Any] | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A dataclass field that is also a command-line flag (``--name-with-dashes``).

    ``negative`` (flag, help) gives a ``bool | None`` field its opposite switch. Fields that share
    a ``one_of`` name form a required, mutually exclusive group: exactly one of them is given.
    ``parse`` turns the flag's text into the field's value (for a list field: the whole list).
    ``aliases`` are older spellings of the flag that still work.
    """
    metadata = {"help": help, "parse": parse, "choices": choices, "metavar": metavar, "negative": negative}
    metadata.update(one_of=one_of, positional=positional, aliases=aliases)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None was allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return inner[0], len(inner) < len(typing.get_args(annotation))
    return annotation, False


def _add_field(target, spec: dataclasses.Field, annotation: Any) -> None:
    meta = spec.metadata
    kind, optional = _base_type(annotation)
    required = spec.default is MISSING and spec.default_factory is MISSING
    default = None if required else (spec.default if spec.default is not MISSING else spec.default_factory())
    if meta["positional"]:
        target.add_argument(spec.name, nargs="*", metavar=meta["metavar"], help=meta["help"])
        return
    flag, common = _flag(spec.name), {"dest": spec.name, "help": meta["help"]}
    if kind is bool and meta["negative"]:
        negative_flag, negative_help = meta["negative"]
        pair = target.add_mutually_exclusive_group()
        pair.add_argument(flag, action="store_true", default=None, **common)
        pair.add_argument(negative_flag, dest=spec.name, action="store_false", default=None, help=negative_help)
        return
    if kind is bool:
        target.add_argument(flag, action="store_true", **common)
        return
    if typing.get_origin(kind) is list and meta["parse"] is None:
        item = typing.get_args(kind)[0]
        target.add_argument(flag, nargs="+", type=item, metavar=meta["metavar"], default=default, **common)
        return
    parse = meta["parse"] or (str if kind is Path else kind)
    target.add_argument(
        flag,
        *meta["aliases"],
        type=parse,
        choices=meta["choices"],
        metavar=meta["metavar"],
        default=default,
        required=required and not optional and not meta["one_of"],
        **common,
    )


def add_arguments(parser: argparse.ArgumentParser, command: type) -> None:
    """Every field of the ``command`` dataclass as a flag of ``parser``, in declaration order."""
    hints = typing.get_type_hints(command)
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for spec in dataclasses.fields(command):
        group_name = spec.metadata["one_of"]
        if group_name and group_name not in groups:
            groups[group_name] = parser.add_mutually_exclusive_group(required=True)
        _add_field(groups.get(group_name, parser), spec, hints[spec.name])


def from_namespace(command: type, namespace: argparse.Namespace):
    """The typed arguments of ``command`` from what argparse parsed."""
    hints = typing.get_type_hints(command)
    values = {}
    for spec in dataclasses.fields(command):
        value = getattr(namespace, spec.name)
        if _base_type(hints[spec.name])[0] is Path and value is not None:
            value = Path(value)
        values[spec.name] = value
    return command(**values)


# Shared options ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ConfigOptions:
    """Commands that read the typed config: --config, then key=value overrides."""

    reads_config: ClassVar[bool] = True
    config: str | None = option("YAML config file (defaults apply to every key it leaves out)", None)
    overrides: list[str] = option(
        "config overrides such as split.rule=temporal or on_bad_record=skip",
        metavar="key=value",
        factory=list,
        positional=True,
    )


SEEN_RULE = (
    "Default: the run's rule, decided at training from serve.exclude_seen and recorded in RUN_DIR/run.json "
    "(auto: leave seen movies out when under 1%% of the training interactions repeat a movie already in "
    "their sequence, as on MovieLens where nobody rates a movie twice; keep them otherwise; runs from "
    "before the rule keep them)."
)
KEEP_SEEN = ("--keep-seen", "let movies already in the session be recommended (overrides the run's rule)")


def seen_option(note: str) -> Any:
    """--exclude-seen / --keep-seen: None leaves the choice to the run (or the server)."""
    return option("never recommend a movie already in the session. " + SEEN_RULE + note, None, negative=KEEP_SEEN)


@dataclass(kw_only=True)
class ClientOptions:
    """Commands that answer sessions: from a run in this process, or from a Triton server."""

    run: Path | None = option(
        "RUN_DIR written by `t4r-app train` (needed unless --server is given; with --server it supplies titles "
        "and unknown ids for servers exported before the catalogue was served)",
        None,
    )
    top_k: int = option("recommendations per session (default 10)", 10, parse=positive_int)
    exclude_seen: bool | None = seen_option(
        " With --server the served ensemble's rule (set at export) applies; asking for the other one is an error."
    )
    server: str | None = option("ask this Triton server instead of loading the model here", None, metavar="HOST:PORT")
    transport: str | None = option(
        "how to reach --server: http or grpc (default: grpc on port 8001, else http)", None, choices=("http", "grpc"),
        aliases=("--protocol",),
    )

    def check(self) -> str | None:
        if self.run is None and self.server is None:
            return "give --run RUN_DIR (answer in this process) or --server HOST:PORT (ask a Triton server)"
        return None


# Commands ----------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class GenerateArgs:
    name: ClassVar[str] = "generate"
    summary: ClassVar[str] = "write a synthetic sessions dataset in the recommendation/ layout"
    description: ClassVar[str] = (
        "Write recommendation/dataset/data-*.tfrecord and recommendation/movie_title_by_index.json "
        "under OUTPUT: users with tastes, Zipf popularity, taste-specific 'what comes next', "
        "sessions split by days, records shuffled across shards. Streams: memory stays flat "
        "whatever the size."
    )
    output: Path = option("folder to write into")
    users: int = option("number of users", parse=positive_int)
    movies: int = option("number of movies", parse=positive_int)
    seed: int = option("random seed (default 0)", 0)
    shards: int = option(f"number of TFRecord shards (default {SHARDS})", SHARDS, parse=positive_int)
    mean_interactions: float = option(f"mean interactions per user (default {MEAN_INTERACTIONS:g})", MEAN_INTERACTIONS)
    zip: bool = option("also write OUTPUT/recommandation.zip", False)


@dataclass(kw_only=True)
class ImportArgs:
    name: ClassVar[str] = "import"
    summary: ClassVar[str] = "turn a public interaction log (MovieLens, RecBole) into the recommendation/ layout"
    description: ClassVar[str] = """\
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
The titles file is optional."""
    epilog: ClassVar[str] = """\
examples:
  t4r-app import --movielens-100k --output data/ml-100k/raw
  t4r-app import --input ml-25m/ --output data/ml-25m/raw --session-gap 1800"""
    input: Path | None = option("the interactions file, or a folder holding one", None, metavar="PATH", one_of="source")
    movielens_100k: bool = option(
        "fetch MovieLens-100K from PyPI (RecBole's wheel, cached in $T4R_APP_CACHE or ~/.cache/t4r-app)",
        False,
        one_of="source",
    )
    output: Path = option("folder to write into", metavar="DIR")
    format: str | None = option(
        "the input's format (default: told from the file names, else the first line)",
        None,
        choices=("movielens-100k", "movielens-dat", "movielens-csv", "recbole"),
    )
    session_gap: int = option(
        f"start a new session after a gap longer than this (default {SESSION_GAP_S})", SESSION_GAP_S, parse=positive_int,
        metavar="SECONDS",
    )
    shards: int = option(f"number of TFRecord shards (default {SHARDS})", SHARDS, parse=positive_int)
    seed: int = option("seed of the record shuffle (default 0)", 0)


def quantile_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


@dataclass
class CutArgs:
    name: ClassVar[str] = "cut"
    summary: ClassVar[str] = "keep the interactions before a point in time: an earlier day of the same data"
    description: ClassVar[str] = """\
Write INPUT as it was before a cut-off time, in the layout `t4r-app preprocess` reads:
the daily update rehearsed on one log (day 1 = the cut, day 2 = INPUT).

  OUTPUT/recommendation/dataset/data-*.tfrecord     each record's interactions before the cut-off
  OUTPUT/recommendation/movie_title_by_index.json   titles of the movies watched before it
  OUTPUT/cut_stats.json                             counts that reconcile

A session that spans the cut-off is cut inside it; a record left empty is dropped and
counted. A movie first watched after the cut-off is left out of the titles too: it was
not in that day's catalogue, and `preprocess --vocabulary-from` then counts it as new."""
    epilog: ClassVar[str] = """\
examples:
  t4r-app cut --input data/ml-100k/raw/recommandation.zip --output data/ml-100k/day1 --before-quantile 0.9
  t4r-app cut --input recommandation.zip --output day1 --before 1700000000"""
    input: str = option("recommandation.zip, a dataset folder, or a glob (as preprocess reads)")
    output: Path = option("folder to write the cut into", metavar="DIR")
    before: int | None = option("keep interactions with a timestamp before this Unix time", None, metavar="SECONDS",
                                one_of="cutoff")
    before_quantile: float | None = option(
        "keep interactions before this quantile of all timestamps (0.9: the first 90%% of the log in time)",
        None, parse=quantile_value, metavar="Q", one_of="cutoff",
    )
    skip_bad_records: bool = option("drop and count malformed records instead of stopping at the first", False)


@dataclass(kw_only=True)
class PreprocessArgs(ConfigOptions):
    name: ClassVar[str] = "preprocess"
    summary: ClassVar[str] = "turn TFRecord sessions into train/valid/test parquet sequences with NVTabular"
    description: ClassVar[str] = (
        "Read the sessions (a zip, a folder, or a glob of .tfrecord files, plain or GZIP), check "
        "every record, and run the NVTabular workflow: encode movies, build time-ordered "
        "sequences, split them by protocol. Writes parquet with the merlin schema, the fitted "
        "workflow, an id mapping and stats.json to OUTPUT."
    )
    input: str = option("recommandation.zip, a dataset folder, or a glob")
    output: Path = option("DATA_DIR to write the outputs into")
    titles: Path | None = option("movie_title_by_index.json, when it is not beside the shards or in the zip", None)
    vocabulary_from: Path | None = option(
        "a previous DATA_DIR: every movie it knew keeps its item id, new movies get the next ids (stats.json: "
        "items_new), so ids stored downstream and a model trained on it stay valid. Without it ids follow popularity "
        "and may change between fits",
        None,
        metavar="OLD_DATA_DIR",
    )


NPROC_HELP = (
    "data-parallel training in N processes on this machine through torchrun: one per GPU (NCCL), "
    "or N CPU processes (gloo) sharing the cores. Each trains on its share of every epoch and validates on "
    "the whole validation set; rank 0 checkpoints and writes the run. Several machines: run torchrun yourself (README)"
)
QUIET_HELP = "no progress bars"


@dataclass(kw_only=True)
class TrainArgs(ConfigOptions):
    name: ClassVar[str] = "train"
    summary: ClassVar[str] = "train the sequence model (BERT4Rec, or SASRec) on preprocessed data with T4R's Trainer"
    description: ClassVar[str] = (
        "Train model.architecture (bert4rec: masked-item modelling; sasrec: every next item, left to right) "
        "on DATA_DIR/train, validating on DATA_DIR/valid every "
        "epoch; stops early when validation NDCG@10 stops improving and keeps the best model. Uses the "
        "GPU when there is one. Writes RUN_DIR/{model/, config.yaml, metrics.json, training_log.csv, "
        "training_curves.png, checkpoints/}. model.title_embeddings=init|feature also reads the movies' "
        "titles (all-MiniLM-L6-v2 vectors, encoded once and cached as DATA_DIR/title_vectors.npz)."
    )
    data: Path = option("DATA_DIR written by `t4r-app preprocess`")
    output: Path = option("RUN_DIR to write the run into")
    resume: bool = option("continue the run in RUN_DIR from its last checkpoint", False)
    init_from: Path | None = option(
        "start from an earlier RUN_DIR's weights (the daily update): the data must keep its item ids "
        "(preprocess --vocabulary-from); new movies' rows start fresh, the optimizer too; run.json records the parent",
        None,
        metavar="OLD_RUN_DIR",
    )
    quiet: bool = option(QUIET_HELP, False)
    nproc: int = option(NPROC_HELP, 1, parse=positive_int)


@dataclass(kw_only=True)
class PipelineArgs(ConfigOptions):
    name: ClassVar[str] = "pipeline"
    summary: ClassVar[str] = "generate (optionally) -> preprocess -> train -> evaluate, in one go"
    description: ClassVar[str] = (
        "The offline stages as one call, the same steps and outputs as running generate, preprocess, train and "
        "evaluate one after another, each printing its summary as it finishes. With --generate-users and "
        "--generate-movies a synthetic dataset is first written into the folder INPUT (and read from its zip "
        "with --zip). RUN_DIR must not hold a run already: training refuses to overwrite one."
    )
    input: Path = option("recommandation.zip, a dataset folder, or a glob (with --generate-*: the folder to write)")
    data: Path = option("DATA_DIR to preprocess into")
    run: Path = option("RUN_DIR to train into")
    titles: Path | None = option("movie_title_by_index.json, when it is not beside the shards or in the zip", None)
    generate_users: int | None = option("first generate a synthetic dataset of this many users", None, parse=positive_int)
    generate_movies: int | None = option("... over this many movies", None, parse=positive_int)
    seed: int = option("seed of the generated dataset (default 0)", 0)
    zip: bool = option("with --generate-*: also write INPUT/recommandation.zip and preprocess that", False)
    quiet: bool = option(QUIET_HELP, False)

    def check(self) -> str | None:
        if (self.generate_users is None) != (self.generate_movies is None):
            return "give both --generate-users and --generate-movies, or neither"
        return None


@dataclass(kw_only=True)
class EvaluateArgs:
    name: ClassVar[str] = "evaluate"
    summary: ClassVar[str] = "score a trained run and the baselines on validation and test"
    description: ClassVar[str] = (
        "HR@k, NDCG@k and MRR for the model, MostPopular and a first-order Markov model (fitted on each "
        "sequence's whole training part), ranked three ways: over all movies ('full'), with every movie the "
        "user watched before the target left out ('full_unseen'), and the BERT4Rec paper's sampled protocol (100 "
        "popularity-sampled negatives). The model's NDCG@10 minus each baseline's comes with a paired "
        "bootstrap 95% interval over the users, and a line says where, on validation, that interval is not above 0 "
        "(the model loses, or is not distinguishable from the baseline). "
        "Writes RUN_DIR/eval.json, RUN_DIR/report.md and RUN_DIR/eval_plot.png; settings come from the "
        "run's config (evaluate.*)."
    )
    run: Path = option("RUN_DIR written by `t4r-app train`")
    data: Path | None = option("DATA_DIR to evaluate on (default: the one the run was trained on)", None)
    against: Path | None = option(
        "also compare with an earlier RUN_DIR (the model being served, before a daily update): both answer the "
        "test sessions of the users who came back since its data, as `predict` would; HR@10 and NDCG@10 side by side, "
        "and on the targets that are new movies",
        None,
        metavar="OLD_RUN_DIR",
    )
    quiet: bool = option(QUIET_HELP, False)


@dataclass(kw_only=True)
class PredictArgs(ClientOptions):
    name: ClassVar[str] = "predict"
    summary: ClassVar[str] = "top-k next movies for sessions in a JSON-lines or parquet file"
    description: ClassVar[str] = (
        'Reads sessions, one per line: {"session_id": ..., "movieIndices": [raw ids, oldest first]} '
        "(or a parquet file with those columns), scores the movie after each session's last (BERT4Rec: "
        "a [MASK] appended there) and "
        'writes {"session_id", "movieIndices": [top-k raw ids], "scores", "titles"} per line. '
        "Unknown movie ids are left out and listed in 'unknown_movies'; a session with no known "
        "movie gets the most popular movies and 'fallback': 'most_popular'; long sessions keep "
        "their most recent movies, as many as the model reads (BERT4Rec: max_seq_length - 1, room left "
        "for [MASK]; SASRec: max_seq_length). Each line records 'exclude_seen': whether the "
        "session's own movies were left out (see --exclude-seen)."
    )
    input: Path = option("sessions .jsonl or .parquet")
    output: Path = option("predictions .jsonl to write")
    show: int = option("also print the first N sessions' recommendations", 0, metavar="N")
    quiet: bool = option(QUIET_HELP, False)


@dataclass(kw_only=True)
class RecommendArgs(ClientOptions):
    name: ClassVar[str] = "recommend"
    summary: ClassVar[str] = "top-k next movies for one session given on the command line"
    description: ClassVar[str] = (
        "Prints a ranked table (rank, title, movie id, score) of the movies most likely to come next "
        "after the session. Titles match exactly, else ignoring case, else as the one title containing "
        "the text; an ambiguous or unknown title is an error listing candidates."
    )
    session: list[int] | None = option("raw movie ids, oldest first", None, parse=movie_id_list, metavar="ID,ID,...")
    titles: list[str] | None = option("movie titles, oldest first (after --session)", None, metavar="TITLE")
    json: bool = option("print JSON instead of a table", False)


@dataclass(kw_only=True)
class ExportArgs:
    name: ClassVar[str] = "export"
    summary: ClassVar[str] = "export a run as a Triton ensemble (NVTabular workflow + the traced model)"
    description: ClassVar[str] = (
        "Writes a Triton model repository with merlin-systems: the serving part of the run's NVTabular "
        "workflow (raw movie ids in, encoded and truncated sessions out) followed by the run's model "
        "traced in eval mode, returning the top-k raw movie ids and their scores. Requests carry "
        "'movieIndices' as merlin ragged inputs (movieIndices__values INT64 [1, movies], movieIndices__offsets "
        "INT32 [1, sessions + 1]), one or many sessions each, and the server merges waiting requests into one pass; "
        "the answer is 'movie_ids' and 'scores', shape [1, sessions, k]. --into adds the run as the next model "
        "version of a repository being served, and --server then switches that server to it without dropping a request. "
        "Both targets run every step in Triton's python backend; gpu runs the model step on a GPU "
        "instance (KIND_GPU) and can be exported on a machine without one (with a warning) to serve elsewhere."
    )
    run: Path = option("RUN_DIR written by `t4r-app train`")
    output: Path | None = option("model repository folder to write (replaced if present)", None, one_of="destination")
    into: Path | None = option(
        "a repository being served: add the run as its next model version, beside the one answering",
        None,
        one_of="destination",
    )
    server: str | None = option(
        "with --into: the HTTP address of the server serving it, switched to the new version once written "
        "(the old one answers until the new one is ready)",
        None,
        metavar="HOST:PORT",
    )
    target: str | None = option(
        "cpu: model on the CPU; gpu: model on a GPU instance (default: gpu where torch sees a GPU, else cpu)",
        None,
        choices=("cpu", "gpu"),
    )
    top_k: int = option("movies per answer (default 10)", 10, parse=positive_int)
    exclude_seen: bool | None = seen_option(" The server applies the rule baked in here to every request.")
    instances: int = option(
        "python-backend processes answering side by side, each with its own copy of the model and torch's threads "
        "(default 1; more pay off only with cores to spare: see the README's serving figures)",
        1,
        parse=positive_int,
    )


@dataclass(kw_only=True)
class ServeArgs:
    name: ClassVar[str] = "serve"
    summary: ClassVar[str] = "run tritonserver on an exported repository until Ctrl-C"
    description: ClassVar[str] = (
        "Starts the tritonserver on PATH (the Merlin container) or else the one in the nvidia-pytriton "
        "wheel, waits until it reports ready, prints the endpoints and stops it cleanly on Ctrl-C."
    )
    repository: Path = option("folder written by `t4r-app export`")
    host: str = option("address to bind (default 127.0.0.1)", "127.0.0.1")
    http_port: int = option("HTTP port (default 8000)", 8000, parse=positive_int)
    grpc_port: int = option("gRPC port (default 8001)", 8001, parse=positive_int)
    metrics_port: int = option("metrics port (default 8002)", 8002, parse=positive_int)
    log_file: Path | None = option("server log (default: beside the repository)", None)
    try_sessions: Path | None = option(
        "instead of waiting: ask the server for these sessions, print, stop", None, metavar="FILE"
    )
    run: Path | None = option(
        "with --try-sessions: the RUN_DIR the repository was exported from (titles, for repositories exported "
        "before the catalogue was served)",
        None,
    )


@dataclass(kw_only=True)
class TuneArgs(ConfigOptions):
    name: ClassVar[str] = "tune"
    summary: ClassVar[str] = "grid-search the mask probability on validation"
    description: ClassVar[str] = (
        "Train one model per value of tune.mask_probabilities (times tune.last_item_mask_shares when "
        "given) with early stopping, compare validation NDCG@10 only, and write OUTPUT/tune.csv, "
        "OUTPUT/tune.png and OUTPUT/best_config.yaml. An interrupted tune resumes its trials."
    )
    data: Path = option("DATA_DIR written by `t4r-app preprocess`")
    output: Path = option("folder for the trials and results")
    quiet: bool = option(QUIET_HELP, False)


COMMANDS: tuple[type, ...] = (
    GenerateArgs, ImportArgs, CutArgs, PreprocessArgs, TrainArgs, EvaluateArgs, PredictArgs, RecommendArgs, ExportArgs,
    ServeArgs, TuneArgs, PipelineArgs,
)
