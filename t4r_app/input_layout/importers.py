"""``t4r-app import``: public interaction logs -> the product's input layout.

Reads MovieLens 100K (``u.data`` + ``u.item``), MovieLens 1M/10M (``ratings.dat`` +
``movies.dat``), MovieLens 20M/25M/latest (``ratings.csv`` + ``movies.csv``) and RecBole
atomic files (``NAME.inter`` + ``NAME.item``), and writes what ``t4r-app preprocess`` reads:
``recommendation/dataset/data-*.tfrecord``, ``recommendation/movie_title_by_index.json``,
``recommandation.zip``, plus ``import_stats.json`` with counts that reconcile::

    lines_read     = header_lines + interactions_written + sum(rows_dropped)
    titles_read    = titles_written + titles_left_out

Every rating is one interaction, whatever its value, as in the BERT4Rec paper. Each user's
interactions are ordered by (timestamp, position in the file) and cut into sessions where
consecutive ones are more than ``session_gap`` seconds apart; a session is one record, and
records are shuffled over the shards, so a user's history is spread over many records and
shards as in the product's real data.

Ids: MovieLens ids are integers and are kept. A RecBole column (users or items) keeps its
tokens when all of them are non-negative integers written plainly; otherwise its distinct
tokens are numbered 0, 1, ... in sorted (string) order, and titles follow their item.
RecBole timestamps may be fractional; they are truncated to whole seconds.

A clean file is read in one vectorised pass (pyarrow.csv). One that does not parse is read
again line by line: blank lines and repeated header lines are dropped and counted, and
anything else is an error naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from t4r_app.input_layout.seed_layout import ZIP_NAME, ShardWriter, titles_path, write_titles, write_zip
from t4r_app.input_layout.input_defaults import SESSION_GAP_S, SHARDS
from t4r_app.data.sources import IMPORT_INCOMPLETE
from t4r_app.errors import DataImportError
from workflow.list_columns import offsets_of

STATS_FILE = "import_stats.json"
_RECORDS_PER_CHUNK = 200_000  # records encoded per call: bounds the encoder's buffers
_LINES_PER_BLOCK = 1_000_000  # lines parsed per call on the line-by-line pass
_NUMBER = re.compile(r"[0-9]{1,18}")  # a MovieLens id or timestamp (fits int64)
_PLAIN_INTEGER = r"^(0|[1-9][0-9]{0,17})$"  # a token kept as its own id: "7" yes, "007" no


# ---------------------------------------------------------------- formats


@dataclass(frozen=True)
class _Layout:
    """Where an interactions file keeps users, movies and timestamps."""

    delimiter: str
    fields: tuple[str, ...]  # every field of a line, in order
    user: str
    movie: str
    timestamp: str
    describe: str  # a line's layout, for error messages
    tokens: bool = False  # ids are tokens (strings) and timestamps may be fractional
    blanks: tuple[str, ...] = ()  # fields that must be empty: the gaps inside a '::' separator
    header: str | None = None  # the first line, when the file has a header


@dataclass(frozen=True)
class LogFormat:
    name: str
    interactions_name: str  # a glob that matches the interactions file's name
    files: str  # what the format's files are called, for messages
    layout: Callable[[Path], _Layout]
    titles_file: Callable[[Path], Path]  # the titles file that goes with an interactions file
    read_titles: Callable[[Path], dict[str, str]]  # {item token: title}
    looks_like: Callable[[str], bool]  # whether a file's first line is this format's (a file named otherwise)


def _first_line(path: Path) -> str:
    with open(path, "rb") as handle:
        return handle.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")


def _header_layout(path: Path, delimiter: str, roles: dict[str, str], tokens: bool) -> _Layout:
    """The layout of a file whose header names its fields; ``roles`` maps user/movie/timestamp to names.

    RecBole headers read ``name:type``; only the name counts.
    """
    header = _first_line(path)
    fields = tuple(header.split(delimiter))
    by_name = {name.split(":", 1)[0]: name for name in fields}
    missing = [name for name in roles.values() if name not in by_name]
    if missing:
        raise DataImportError(
            f"{path}, line 1: the header needs the fields {', '.join(roles.values())}; "
            f"{', '.join(missing)} missing from {header[:200]!r}"
        )
    named = {role: by_name[name] for role, name in roles.items()}
    return _Layout(delimiter, fields, describe=header, tokens=tokens, header=header, **named)


def _movielens_100k_layout(path: Path) -> _Layout:
    return _Layout("\t", ("user", "movie", "rating", "timestamp"), "user", "movie", "timestamp",
                   describe="user<TAB>item<TAB>rating<TAB>timestamp")


def _movielens_dat_layout(path: Path) -> _Layout:
    # '::' is read as ':' so that the fast single-character parser applies; the empty fields
    # between the two colons are checked to be empty.
    fields = ("user", "gap1", "movie", "gap2", "rating", "gap3", "timestamp")
    return _Layout(":", fields, "user", "movie", "timestamp", describe="UserID::MovieID::Rating::Timestamp",
                   blanks=("gap1", "gap2", "gap3"))


def _movielens_csv_layout(path: Path) -> _Layout:
    return _header_layout(path, ",", {"user": "userId", "movie": "movieId", "timestamp": "timestamp"}, tokens=False)


def _recbole_layout(path: Path) -> _Layout:
    return _header_layout(path, "\t", {"user": "user_id", "movie": "item_id", "timestamp": "timestamp"}, tokens=True)


# ---------------------------------------------------------------- titles


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # ML-100K and ML-1M are latin-1, which decodes any byte


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of the non-blank lines of a titles file."""
    # Split at '\n' only: str.splitlines would also split at characters such as '\x85' that a
    # latin-1 title can hold.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def _add_title(titles: dict[str, str], token: str, title: str, path: Path, number: int) -> None:
    if token in titles:
        raise DataImportError(f"{path}, line {number}: movie {token} already has a title ({titles[token]!r})")
    titles[token] = title


def _movielens_titles(separator: str, title_of: Callable[[list[str]], str], min_fields: int, describe: str):
    """A reader of ``id<sep>title<sep>...`` titles files, keyed by the id written plainly."""

    def read(path: Path) -> dict[str, str]:
        titles: dict[str, str] = {}
        for number, line in _text_lines(path):
            fields = line.split(separator)
            if len(fields) < min_fields or not _NUMBER.fullmatch(fields[0]):
                raise DataImportError(f"{path}, line {number}: expected {describe}, found {line[:200]!r}")
            _add_title(titles, str(int(fields[0])), title_of(fields), path, number)
        return titles

    return read


def _read_movies_csv(path: Path) -> dict[str, str]:
    """movies.csv: ``movieId,title,genres`` with quoted titles that may hold commas."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header = next(reader, [])
    if "movieId" not in header or "title" not in header:
        raise DataImportError(f"{path}, line 1: expected a header with movieId and title, found {','.join(header)!r}")
    id_column, title_column = header.index("movieId"), header.index("title")
    titles: dict[str, str] = {}
    for row in reader:
        if not any(row):
            continue
        if len(row) != len(header) or not _NUMBER.fullmatch(row[id_column]):
            raise DataImportError(
                f"{path}, line {reader.line_num}: expected {len(header)} fields ({','.join(header)}), found {row!r}"
            )
        _add_title(titles, str(int(row[id_column])), row[title_column], path, reader.line_num)
    return titles


def _read_recbole_items(path: Path) -> dict[str, str]:
    """NAME.item: the title is ``movie_title`` or ``title``, followed by `` (release_year)`` when given.

    RecBole's ML-100K keeps the year apart from the title; MovieLens writes ``Title (Year)``.
    """
    lines = _text_lines(path)
    _, header = next(lines, (1, ""))
    names = [name.split(":", 1)[0] for name in header.split("\t")]
    title_name = next((n for n in ("movie_title", "title") if n in names), None)
    if "item_id" not in names or title_name is None:
        raise DataImportError(
            f"{path}, line 1: expected item_id and movie_title (or title) fields, found {header[:200]!r}"
        )
    item, title = names.index("item_id"), names.index(title_name)
    year = names.index("release_year") if "release_year" in names else None
    titles: dict[str, str] = {}
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(names):
            raise DataImportError(
                f"{path}, line {number}: expected {len(names)} tab-separated fields, found {len(fields)}"
            )
        text = fields[title]
        # RecBole's ML-100K writes "unkonwn" for a missing year: only a number is appended
        if year is not None and fields[year].isdigit() and not text.endswith(f"({fields[year]})"):
            text = f"{text} ({fields[year]})"
        _add_title(titles, fields[item], text, path, number)
    return titles


def _looks_like_recbole(line: str) -> bool:
    fields = line.split("\t")  # every header field reads name:type
    return len(fields) >= 3 and all(":" in field for field in fields)


FORMATS = {
    log.name: log
    for log in (
        LogFormat(
            name="movielens-100k",
            interactions_name="u.data",
            files="u.data + u.item",
            layout=_movielens_100k_layout,
            titles_file=lambda path: path.parent / "u.item",
            read_titles=_movielens_titles("|", lambda f: f[1], 2, "movie id|title|release date|..."),
            looks_like=lambda line: re.fullmatch(r"\d+\t\d+\t[^\t]*\t\d+", line) is not None,
        ),
        LogFormat(
            name="movielens-dat",
            interactions_name="ratings.dat",
            files="ratings.dat + movies.dat",
            layout=_movielens_dat_layout,
            titles_file=lambda path: path.parent / "movies.dat",
            read_titles=_movielens_titles("::", lambda f: "::".join(f[1:-1]), 3, "MovieID::Title::Genres"),
            looks_like=lambda line: re.fullmatch(r"\d+::\d+::[^:]*::\d+", line) is not None,
        ),
        LogFormat(
            name="movielens-csv",
            interactions_name="ratings.csv",
            files="ratings.csv + movies.csv",
            layout=_movielens_csv_layout,
            titles_file=lambda path: path.parent / "movies.csv",
            read_titles=_read_movies_csv,
            looks_like=lambda line: line.split(",")[:2] == ["userId", "movieId"],
        ),
        LogFormat(
            name="recbole",
            interactions_name="*.inter",
            files="NAME.inter + NAME.item",
            layout=_recbole_layout,
            titles_file=lambda path: path.with_suffix(".item"),
            read_titles=_read_recbole_items,
            looks_like=_looks_like_recbole,
        ),
    )
}


def _accepted() -> str:
    return "; ".join(f"{log.name} ({log.files})" for log in FORMATS.values())


# ---------------------------------------------------------------- detection


def detect_format(input_path: Path, forced: str | None = None) -> tuple[LogFormat, Path]:
    """The format of an input file or folder, and its interactions file."""
    if forced is not None and forced not in FORMATS:
        raise DataImportError(f"unknown format {forced!r}; accepted: {', '.join(FORMATS)}")
    if input_path.is_dir():
        return _detect_in_folder(input_path, forced)
    if not input_path.is_file():
        raise DataImportError(f"{input_path}: no such file or directory")
    if forced is not None:
        return FORMATS[forced], input_path
    log = next((log for log in FORMATS.values() if fnmatch(input_path.name, log.interactions_name)), None)
    log = log or _sniff(input_path)
    if log is None:
        hint = "a zip archive: extract it and pass the folder" if zipfile.is_zipfile(input_path) else (
            f"first line {_first_line(input_path)[:120]!r}"
        )
        raise DataImportError(
            f"{input_path}: cannot tell the format ({hint}). Accepted: {_accepted()}; or pass --format"
        )
    return log, input_path


def _sniff(path: Path) -> LogFormat | None:
    """The format that the first line of a file with an unusual name looks like (the first
    lines of the formats exclude each other)."""
    line = _first_line(path)
    return next((log for log in FORMATS.values() if log.looks_like(line)), None)


def _detect_in_folder(folder: Path, forced: str | None) -> tuple[LogFormat, Path]:
    logs = [FORMATS[forced]] if forced else list(FORMATS.values())
    found = [(log, p) for log in logs for p in sorted(folder.glob(log.interactions_name)) if p.is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(f"{p.name} ({log.name})" for log, p in found)
        raise DataImportError(f"{folder}: several interactions files ({names}); pass the one to import as --input")
    held = sorted(p.name for p in folder.iterdir())
    listing = ", ".join(held[:12]) + (f" and {len(held) - 12} more" if len(held) > 12 else "") or "nothing"
    wanted = f"{logs[0].interactions_name} ({logs[0].name})" if forced else f"one of: {_accepted()}"
    raise DataImportError(f"{folder}: no interactions file found (it holds {listing}); expected {wanted}")


# ---------------------------------------------------------------- reading interactions


@dataclass
class _Rows:
    table: pa.Table  # the user, movie and timestamp columns, in file order
    lines_read: int
    header_lines: int
    dropped: Counter = field(default_factory=Counter)


def _column_types(layout: _Layout) -> dict[str, pa.DataType]:
    """The columns read and their types; a null-typed (blank) column fails to parse unless empty."""
    ids = pa.string() if layout.tokens else pa.int64()
    return {
        layout.user: ids,
        layout.movie: ids,
        layout.timestamp: pa.float64() if layout.tokens else pa.int64(),
        **{name: pa.null() for name in layout.blanks},
    }


def _parse(source, layout: _Layout, skip_rows: int) -> pa.Table:
    types = _column_types(layout)
    return pacsv.read_csv(
        source,
        read_options=pacsv.ReadOptions(column_names=list(layout.fields), skip_rows=skip_rows),
        # No quoting in these files; blank lines come through as rows of nulls so they are counted.
        parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, quote_char=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(types), null_values=[""], strings_can_be_null=True
        ),
    )


def _is_clean(table: pa.Table, layout: _Layout) -> bool:
    """No empty value, negative number or non-finite timestamp among the ids and timestamps."""
    if table.num_rows == 0:
        return True
    for name in (layout.user, layout.movie, layout.timestamp):
        column = table.column(name)
        if column.null_count:
            return False
        if pa.types.is_string(column.type):
            continue
        if pc.min(column).as_py() < 0:
            return False
        if pa.types.is_floating(column.type) and not pc.all(pc.is_finite(column)).as_py():
            return False
    return True


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def _read_rows(path: Path, layout: _Layout) -> _Rows:
    header_lines = int(layout.header is not None)
    try:
        table = _parse(str(path), layout, skip_rows=header_lines)
    except pa.ArrowInvalid:
        return _read_line_by_line(path, layout)
    lines = _count_lines(path)
    # Every line must have become a row; if not, the slow pass finds out which did not.
    if _is_clean(table, layout) and lines == header_lines + table.num_rows:
        return _Rows(table, lines, header_lines)
    return _read_line_by_line(path, layout)


def _read_line_by_line(path: Path, layout: _Layout) -> _Rows:
    header = None if layout.header is None else layout.header.encode()
    tables, dropped = [], Counter()
    block: list[bytes] = []
    numbers: list[int] = []
    lines = 0
    with open(path, "rb") as handle:
        for lines, line in enumerate(handle, start=1):
            content = line.rstrip(b"\r\n")
            if lines == 1 and header is not None:
                continue
            if not content.strip():
                dropped["blank_line"] += 1
            elif content == header:
                dropped["duplicate_header"] += 1  # files concatenated with their headers
            else:
                block.append(content)
                numbers.append(lines)
                if len(block) == _LINES_PER_BLOCK:
                    tables.append(_parse_block(path, layout, block, numbers))
                    block, numbers = [], []
    if block:
        tables.append(_parse_block(path, layout, block, numbers))
    if not tables:
        tables = [pa.schema(_column_types(layout)).empty_table()]
    table = pa.concat_tables(tables)
    return _Rows(table, lines, int(header is not None and lines > 0), dropped)


def _parse_block(path: Path, layout: _Layout, lines: list[bytes], numbers: list[int]) -> pa.Table:
    try:
        table = _parse(io.BytesIO(b"\n".join(lines) + b"\n"), layout, 0)
        if _is_clean(table, layout):
            return table
    except pa.ArrowInvalid:
        pass
    for number, line in zip(numbers, lines):
        problem = _line_problem(line, layout)
        if problem:
            raise DataImportError(f"{path}, line {number}: {problem}: {line[:200].decode('utf-8', 'replace')!r}")
    raise DataImportError(f"{path}, lines {numbers[0]}-{numbers[-1]}: cannot be parsed as {layout.describe}")


def _line_problem(line: bytes, layout: _Layout) -> str | None:
    """What is wrong with one data line, None when it is a good one."""
    try:
        values = line.decode("utf-8").split(layout.delimiter)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    row = dict(zip(layout.fields, values))
    if len(values) != len(layout.fields) or any(row[name] for name in layout.blanks):
        return f"expected {layout.describe}"
    for role, name in (("user", layout.user), ("movie", layout.movie)):
        if layout.tokens and not row[name]:
            return f"empty {role} id"
        if not layout.tokens and not _NUMBER.fullmatch(row[name]):
            return f"{role} id {row[name]!r} is not a non-negative integer"
    return None if _is_timestamp(row[layout.timestamp], layout.tokens) else (
        f"timestamp {row[layout.timestamp]!r} is not a non-negative number of seconds"
    )


def _is_timestamp(text: str, fractional: bool) -> bool:
    if not fractional:
        return bool(_NUMBER.fullmatch(text))
    try:
        value = float(text)
    except ValueError:
        return False
    return np.isfinite(value) and value >= 0


# ---------------------------------------------------------------- ids and titles


def _ids(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str] | None]:
    """int64 ids of a column, and its sorted distinct tokens when they had to be renumbered."""
    if not pa.types.is_string(column.type):
        return column.to_numpy(), None
    if pc.all(pc.match_substring_regex(column, _PLAIN_INTEGER)).as_py():
        return pc.cast(column, pa.int64()).to_numpy(), None
    distinct = pc.unique(column)
    distinct = distinct.take(pc.sort_indices(distinct))
    return pc.index_in(column, value_set=distinct).to_numpy().astype(np.int64), distinct.to_pylist()


def _number_titles(titles: dict[str, str], tokens: list[str] | None) -> dict[int, str]:
    """Titles keyed by movie index; a title whose item is no movie index is left out."""
    if tokens is None:
        numbered = {int(t): title for t, title in titles.items() if re.fullmatch(_PLAIN_INTEGER, t)}
    else:
        index = {token: i for i, token in enumerate(tokens)}
        numbered = {index[t]: title for t, title in titles.items() if t in index}
    return dict(sorted(numbered.items()))


@dataclass
class PublicLog:
    """A public log's interactions as int64 arrays in file order, with titles by movie index."""

    format: str
    interactions_file: Path
    titles_file: Path  # the titles file of the format, looked for beside the interactions file
    has_titles: bool  # whether that file is there
    users: np.ndarray
    movies: np.ndarray
    timestamps: np.ndarray
    titles: dict[int, str]
    titles_read: int
    lines_read: int
    header_lines: int
    rows_dropped: Counter
    renumbered: list[str]  # "users" and/or "movies" whose tokens were numbered in sorted order


def read_log(input_path: str | Path, format_name: str | None = None) -> PublicLog:
    """Detect the format of a file or folder and read its interactions and titles."""
    log, path = detect_format(Path(input_path), format_name)
    layout = log.layout(path)
    rows = _read_rows(path, layout)
    if rows.table.num_rows == 0:
        raise DataImportError(f"{path}: no interactions in it ({rows.lines_read} lines read)")
    users, user_tokens = _ids(rows.table.column(layout.user))
    movies, movie_tokens = _ids(rows.table.column(layout.movie))
    timestamps = rows.table.column(layout.timestamp).to_numpy()
    if timestamps.dtype.kind == "f":
        timestamps = np.floor(timestamps).astype(np.int64)
    titles_file = log.titles_file(path)
    has_titles = titles_file.is_file()
    raw_titles = log.read_titles(titles_file) if has_titles else {}
    return PublicLog(
        format=log.name,
        interactions_file=path,
        titles_file=titles_file,
        has_titles=has_titles,
        users=users,
        movies=movies,
        timestamps=timestamps,
        titles=_number_titles(raw_titles, movie_tokens),
        titles_read=len(raw_titles),
        lines_read=rows.lines_read,
        header_lines=rows.header_lines,
        rows_dropped=rows.dropped,
        renumbered=[name for name, tokens in (("users", user_tokens), ("movies", movie_tokens)) if tokens is not None],
    )


# ---------------------------------------------------------------- sessions and output


def cut_sessions(users: np.ndarray, timestamps: np.ndarray, session_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts interactions by (user, timestamp, file position), and session offsets into it.

    Session ``i`` is ``order[offsets[i]:offsets[i + 1]]``: one user's interactions with no gap
    above ``session_gap`` seconds between consecutive ones.
    """
    order = np.lexsort((timestamps, users))  # a stable sort: equal timestamps keep their file order
    sorted_users, sorted_times = users[order], timestamps[order]
    new_session = (sorted_users[1:] != sorted_users[:-1]) | (np.diff(sorted_times) > session_gap)
    starts = np.flatnonzero(new_session) + 1
    return order, np.concatenate([[0], starts, [len(order)]])


def _write_records(
    log: PublicLog, order: np.ndarray, offsets: np.ndarray, output: Path, shards: int, seed: int
) -> list[Path]:
    """Write every session as one record, in shuffled order, round robin over the shards."""
    records = len(offsets) - 1
    shuffled = np.random.default_rng(seed).permutation(records)
    starts, lengths = offsets[:-1], np.diff(offsets)
    with ShardWriter(output, shards) as writer, tqdm(total=records, desc="write records", unit=" records") as progress:
        for first in range(0, records, _RECORDS_PER_CHUNK):
            chosen = shuffled[first : first + _RECORDS_PER_CHUNK]
            chunk_offsets = offsets_of(lengths[chosen])
            positions = np.repeat(starts[chosen] - chunk_offsets[:-1], lengths[chosen]) + np.arange(chunk_offsets[-1])
            rows = order[positions]
            # Round robin over shuffled records: no shard is empty (preprocess rejects empty
            # shards) and each user's sessions land in many shards.
            shard_of_record = (first + np.arange(len(chosen))) % shards
            users = log.users[order[starts[chosen]]]
            writer.write(users, chunk_offsets, log.movies[rows], log.timestamps[rows], shard_of_record)
            progress.update(len(chosen))
    return writer.paths


@dataclass
class ImportStats:
    input: str
    format: str
    interactions_file: str
    titles_file: str  # looked for beside the interactions file
    titles_found: bool
    session_gap_s: int
    seed: int
    lines_read: int
    header_lines: int
    rows_dropped: dict[str, int]
    interactions_written: int
    users: int
    movies: int
    records_written: int  # one record per session
    shards: list[str]
    titles_read: int
    titles_written: int
    titles_left_out: int  # titles of items that are no movie index (see _number_titles)
    movies_without_title: int
    interactions_without_title: int
    renumbered: list[str]
    zip: str


def import_log(
    input_path: str | Path,
    output: str | Path,
    format_name: str | None = None,
    session_gap: int = SESSION_GAP_S,
    shards: int = SHARDS,
    seed: int = 0,
) -> ImportStats:
    """Read a public log and write it in the product's layout under ``output``; see the module doc."""
    if session_gap < 0 or shards < 1:
        raise ValueError(f"session_gap must be >= 0 and shards >= 1, got {session_gap} and {shards}")
    log = read_log(input_path, format_name)
    output = Path(output)
    # Marked incomplete before anything is written, unmarked after the stats: preprocess refuses
    # an input under a marked folder (a killed import), and the stats and zip go first.
    output.mkdir(parents=True, exist_ok=True)
    (output / IMPORT_INCOMPLETE).write_text("t4r-app import is writing this folder, or was killed while it did\n")
    for stale in (STATS_FILE, ZIP_NAME):
        (output / stale).unlink(missing_ok=True)
    order, offsets = cut_sessions(log.users, log.timestamps, session_gap)
    shard_paths = _write_records(log, order, offsets, output, min(shards, len(offsets) - 1), seed)
    if log.has_titles:
        layout_files = [*shard_paths, write_titles(output, log.titles)]
    else:
        titles_path(output).unlink(missing_ok=True)  # an earlier import's titles would not match these movies
        layout_files = shard_paths
    movies, per_movie = np.unique(log.movies, return_counts=True)
    untitled = ~np.isin(movies, np.fromiter(log.titles, dtype=np.int64, count=len(log.titles)))
    stats = ImportStats(
        input=str(input_path),
        format=log.format,
        interactions_file=str(log.interactions_file),
        titles_file=str(log.titles_file),
        titles_found=log.has_titles,
        session_gap_s=session_gap,
        seed=seed,
        lines_read=log.lines_read,
        header_lines=log.header_lines,
        rows_dropped=dict(sorted(log.rows_dropped.items())),
        interactions_written=int(offsets[-1]),
        users=len(np.unique(log.users)),
        movies=len(movies),
        records_written=len(offsets) - 1,
        shards=[str(p) for p in shard_paths],
        titles_read=log.titles_read,
        titles_written=len(log.titles),
        titles_left_out=log.titles_read - len(log.titles),
        movies_without_title=int(untitled.sum()),
        interactions_without_title=int(per_movie[untitled].sum()),
        renumbered=log.renumbered,
        zip=str(write_zip(output, layout_files)),
    )
    (output / STATS_FILE).write_text(json.dumps(asdict(stats), indent=2))
    (output / IMPORT_INCOMPLETE).unlink()
    return stats


def format_summary(stats: ImportStats) -> str:
    dropped = ", ".join(f"{k}: {v:,}" for k, v in stats.rows_dropped.items()) or "none"
    lines = [
        f"input           {stats.interactions_file} ({stats.format})",
        f"lines           {stats.lines_read:,} read = {stats.header_lines} header + "
        f"{stats.interactions_written:,} interactions + {sum(stats.rows_dropped.values()):,} dropped ({dropped})",
        f"users / movies  {stats.users:,} users, {stats.movies:,} movies"
        + (f" (renumbered in sorted token order: {', '.join(stats.renumbered)})" if stats.renumbered else ""),
        f"sessions        {stats.records_written:,} records over {len(stats.shards)} shards "
        f"(a new session after a gap over {stats.session_gap_s:,} s)",
    ]
    if not stats.titles_found:
        lines.append(
            f"titles          none: {stats.titles_file} not found, imported without titles "
            "(preprocess runs without them; recommendations show movie ids)"
        )
    else:
        lines.append(
            f"titles          {stats.titles_written:,} written from {stats.titles_file}"
            + (f" ({stats.titles_left_out:,} left out: their item is no movie here)" if stats.titles_left_out else "")
        )
        if stats.movies_without_title:
            lines.append(
                f"                {stats.movies_without_title:,} movies ({stats.interactions_without_title:,} "
                "interactions) have no title: preprocess rejects their records unless preprocess.require_titles=false"
            )
    lines.append(f"zip             {stats.zip}")
    return "\n".join(lines)
