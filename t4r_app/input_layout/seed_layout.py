"""Write the product's input layout: shards, titles file and zip, as ``t4r-app preprocess`` reads them.

Layout under an output folder::

    recommendation/dataset/data-0.tfrecord ... data-N-1.tfrecord
    recommendation/movie_title_by_index.json
    recommandation.zip                      (the user's spelling; optional)

Shared by the synthetic generator and the public-data importer, so both write exactly
what the reader expects.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from t4r_app.data.example_codec import encode_examples
from t4r_app.data.sources import TITLES_FILE_NAME
from t4r_app.data.tfrecord_framing import write_framed_record

ZIP_NAME = "recommandation.zip"  # the user's spelling of the archive
DATASET_ROOT = "recommendation"


def titles_path(output: Path) -> Path:
    return output / DATASET_ROOT / TITLES_FILE_NAME


class ShardWriter:
    """Writes session records into ``data-*.tfrecord`` shards; a context manager that closes them."""

    def __init__(self, output: Path, shards: int):
        dataset_dir = output / DATASET_ROOT / "dataset"
        dataset_dir.mkdir(parents=True, exist_ok=True)
        # Shards of an earlier, larger run would otherwise be read along with the new ones.
        for stale in dataset_dir.glob("data-*.tfrecord"):
            stale.unlink()
        self.paths = [dataset_dir / f"data-{i}.tfrecord" for i in range(shards)]
        self._files = [open(path, "wb") for path in self.paths]

    def write(
        self,
        users: np.ndarray,
        offsets: np.ndarray,
        movies: np.ndarray,
        timestamps: np.ndarray,
        shard_of_record: np.ndarray,
        order: np.ndarray | None = None,
    ) -> int:
        """Write record ``i`` = (users[i], movies/timestamps[offsets[i]:offsets[i+1]]) to shard
        ``shard_of_record[i]``, taking records in ``order`` (default: as given). Returns the count."""
        payloads = encode_examples(users, offsets, movies, timestamps)
        for index in range(len(payloads)) if order is None else order:
            write_framed_record(self._files[shard_of_record[index]], payloads[index])
        return len(payloads)

    def close(self) -> None:
        for handle in self._files:
            handle.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_titles(output: Path, titles: Mapping[int, str]) -> Path:
    path = titles_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(movie): title for movie, title in titles.items()}, indent=0))
    return path


def write_zip(output: Path, files: list[Path]) -> Path:
    """Zip ``files`` (inside ``output``) into ``output/recommandation.zip`` under their relative paths."""
    zip_path = output / ZIP_NAME
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in files:
            archive.write(path, path.relative_to(output).as_posix())
    return zip_path
