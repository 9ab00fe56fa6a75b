"""Find the TFRecord shards and the titles file in a zip, a directory or a glob."""

from __future__ import annotations

import glob
import gzip
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from t4r_app.errors import InputError

TITLES_FILE_NAME = "movie_title_by_index.json"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Shard:
    name: str  # what error messages and stats call it: a path, or zip!member
    open_raw: Callable[[], BinaryIO]

    def open(self) -> BinaryIO:
        """Open for reading, decompressing GZIP shards (detected by their magic bytes)."""
        with self.open_raw() as probe:
            magic = probe.read(2)
        stream = self.open_raw()
        return gzip.GzipFile(fileobj=stream, mode="rb") if magic == _GZIP_MAGIC else stream


@dataclass(frozen=True)
class SessionSource:
    description: str
    shards: list[Shard]
    titles_name: str | None
    open_titles: Callable[[], BinaryIO] | None

    def load_titles(self) -> dict[int, str] | None:
        if self.open_titles is None:
            return None
        with self.open_titles() as stream:
            return parse_titles(stream.read(), self.titles_name or "titles")


def natural_key(name: str) -> list:
    # data-2 sorts before data-10, so the "original order" of records is the one a person expects.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_shard_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return ".tfrecord" in base or base.endswith(".tfrec")


# Movie ids are int64 in the records; a titles key beyond that cannot match any of them.
MAX_MOVIE_INDEX = 2**63 - 1


def parse_titles(raw: bytes, name: str) -> dict[int, str]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{name}: not valid JSON ({error})") from error
    except (ValueError, RecursionError) as error:  # a number of over 4300 digits; nesting too deep
        raise InputError(f"{name}: not a usable titles file ({str(error)[:200]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{name}: expected an object {{\"0\": \"title\", ...}}, got {type(data).__name__}")
    titles = {}
    for key, title in data.items():
        try:
            movie = int(key)
        except ValueError:
            raise InputError(f"{name}: key {key!r} is not an integer movie index") from None
        if movie < 0:
            raise InputError(f"{name}: key {key!r} is a negative movie index")
        if movie > MAX_MOVIE_INDEX:
            raise InputError(f"{name}: key {key[:40]!r} is beyond the int64 movie ids of the records")
        if not isinstance(title, str):
            raise InputError(f"{name}: title of movie {key} is {title!r}, not a string")
        titles[movie] = title
    return titles


def _from_zip(path: Path) -> SessionSource:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise InputError(f"{path}: not a valid zip file ({error})") from error
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    archive.close()
    members = sorted(
        (n for n in names if "/dataset/" in f"/{n}" and _is_shard_name(n)), key=natural_key
    )
    if not members:
        top = sorted({n.split("/", 1)[0] for n in names})[:10]
        raise InputError(
            f"{path}: no dataset/*.tfrecord files inside the zip (expected "
            f"recommendation/dataset/data-*.tfrecord); top-level entries: {', '.join(top) or 'none'}"
        )

    def member_opener(member: str) -> Callable[[], BinaryIO]:
        def open_member() -> BinaryIO:
            # One ZipFile per stream: members are read one after another, never concurrently.
            return _ZipMemberStream(path, member)

        return open_member

    shards = [Shard(f"{path}!{m}", member_opener(m)) for m in members]
    titles = [n for n in names if n.rsplit("/", 1)[-1] == TITLES_FILE_NAME]
    titles_member = min(titles, key=len) if titles else None
    return SessionSource(
        description=f"zip {path}",
        shards=shards,
        titles_name=f"{path}!{titles_member}" if titles_member else None,
        open_titles=member_opener(titles_member) if titles_member else None,
    )


class _ZipMemberStream:
    """A readable member stream that closes its zip archive with it."""

    def __init__(self, path: Path, member: str):
        self._archive = zipfile.ZipFile(path)
        self._stream = self._archive.open(member)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def close(self) -> None:
        self._stream.close()
        self._archive.close()

    def __enter__(self) -> "_ZipMemberStream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._stream.closed


def _file_opener(path: Path) -> Callable[[], BinaryIO]:
    return lambda: open(path, "rb")


def _find_titles(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def _from_files(description: str, files: list[Path], titles: Path | None) -> SessionSource:
    files = sorted(files, key=lambda p: natural_key(str(p)))
    return SessionSource(
        description=description,
        shards=[Shard(str(f), _file_opener(f)) for f in files],
        titles_name=str(titles) if titles else None,
        open_titles=_file_opener(titles) if titles else None,
    )


def _from_directory(path: Path) -> SessionSource:
    for dataset_dir in (path / "recommendation" / "dataset", path / "dataset", path):
        files = [f for f in dataset_dir.glob("*") if f.is_file() and _is_shard_name(f.name)]
        if files:
            break
    else:
        raise InputError(
            f"{path}: no *.tfrecord files in it, nor in its dataset/ or recommendation/dataset/ folder"
        )
    titles = _find_titles([dataset_dir / TITLES_FILE_NAME, dataset_dir.parent / TITLES_FILE_NAME])
    return _from_files(f"directory {dataset_dir}", files, titles)


def _from_glob(pattern: str) -> SessionSource:
    files = [Path(f) for f in glob.glob(pattern) if Path(f).is_file()]
    if not files:
        raise InputError(f"{pattern}: matches no file")
    folders = {f.parent for f in files}
    titles = _find_titles(
        [folder / TITLES_FILE_NAME for folder in folders]
        + [folder.parent / TITLES_FILE_NAME for folder in folders]
    )
    return _from_files(f"glob {pattern}", files, titles)


# `t4r-app import` writes this into its OUTPUT first and removes it last: an input beside or
# under it was left half-written by an import that did not finish.
IMPORT_INCOMPLETE = ".t4r-import-incomplete"


def check_not_half_imported(input_path: str) -> None:
    plain = input_path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    path = Path(plain or ".").absolute()
    for folder in [path, *path.parents][:4]:
        if (folder / IMPORT_INCOMPLETE).is_file():
            raise InputError(
                f"{input_path} looks half-written: `t4r-app import` into {folder} did not finish "
                f"({folder / IMPORT_INCOMPLETE} is still there); run the import again"
            )


def resolve_source(input_path: str, titles_path: str | None = None) -> SessionSource:
    """Resolve a zip, a directory or a glob; ``titles_path`` overrides the titles file found."""
    check_not_half_imported(input_path)
    path = Path(input_path)
    if any(ch in input_path for ch in "*?["):
        source = _from_glob(input_path)
    elif path.is_dir():
        source = _from_directory(path)
    elif path.is_file() and zipfile.is_zipfile(path):
        source = _from_zip(path)
    elif path.is_file():
        source = _from_files(f"file {path}", [path], _find_titles([path.parent / TITLES_FILE_NAME]))
    else:
        raise InputError(f"{input_path}: no such file or directory")
    if titles_path is not None:
        titles = Path(titles_path)
        if not titles.is_file():
            raise InputError(f"{titles_path}: titles file not found")
        source = SessionSource(source.description, source.shards, str(titles), _file_opener(titles))
    return source
