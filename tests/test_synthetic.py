"""The generator's data has the structure it promises: skew, taste-specific successors, sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import read_split, run

from t4r_app.input_layout.synthetic import GenerationSpec, generate_dataset, movie_title


def test_generated_sessions_have_learnable_structure(tmp_path):
    summary = generate_dataset(GenerationSpec(users=1500, movies=300, seed=11), tmp_path / "raw")
    assert summary.records > summary.users  # users have several sessions
    run(tmp_path / "raw", tmp_path / "data")
    counts = pd.read_parquet(tmp_path / "data" / "item_mapping.parquet")["interactions"].to_numpy()
    top_share = np.sort(counts)[::-1][: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.3  # skewed popularity: the top 10% of movies get a large share

    sequences = read_split(tmp_path / "data", "sequences")["item_id-list"]
    pairs = pd.DataFrame([(a, b) for seq in sequences for a, b in zip(seq[:-1], seq[1:])], columns=["prev", "next"])
    # First-order Markov top-1 accuracy: good (there is sequential structure) ...
    transitions = pairs.groupby(["prev", "next"]).size().rename("n").reset_index()
    best = transitions.sort_values("n").groupby("prev").tail(1)
    markov_top1 = best["n"].sum() / len(pairs)
    popularity_top1 = pairs["next"].value_counts().iloc[0] / len(pairs)
    assert markov_top1 > 2 * popularity_top1
    # ... yet far from perfect: which successor follows depends on the user's taste, not the last movie.
    assert markov_top1 < 0.5


def test_titles_are_unique():
    titles = [movie_title(m) for m in range(40_000)]
    assert len(set(titles)) == len(titles)


def test_sample_sessions_are_real_histories(tmp_path):
    import json

    generate_dataset(GenerationSpec(users=50, movies=40, seed=2), tmp_path)
    samples = [json.loads(line) for line in (tmp_path / "sample_sessions.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and samples[0]["session_id"] == "user-0"
    assert all(1 <= len(s["movieIndices"]) <= 12 and all(0 <= m < 40 for m in s["movieIndices"]) for s in samples)
