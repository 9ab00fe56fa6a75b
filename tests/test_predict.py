"""Batch prediction: raw ids in, raw ids and titles out, awkward sessions handled, bad files named."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from t4r_app.cli import main
from t4r_app.errors import PredictInputError
from t4r_app.evaluation import model_scorer, movie_ids
from t4r_app.model import max_sequence_length
from t4r_app.predict import predict
from t4r_app.recommender import Recommender
from t4r_app.run_files import load_run
from t4r_app.sequences_io import ItemSequences, read_split


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _raw_sessions(data_dir, count):
    mapping = pd.read_parquet(data_dir / "item_mapping.parquet")
    movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
    items = read_split(data_dir, "test").items
    return [[int(movie_of[i]) for i in items.row(r)] for r in range(count)], mapping


def test_round_trip_raw_ids_and_titles(tiny_run, tiny_data, tmp_path):
    sessions, mapping = _raw_sessions(tiny_data, 40)
    source = _write_jsonl(tmp_path / "in.jsonl", [{"session_id": f"s{i}", "movieIndices": s} for i, s in enumerate(sessions)])
    summary = predict(tiny_run, source, tmp_path / "out.jsonl", top_k=5)
    assert summary.sessions == 40 and summary.unknown_movies == 0 and summary.fallbacks == 0
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    titles = json.loads((tiny_data.parent / "raw" / "recommendation" / "movie_title_by_index.json").read_text())
    assert [line["session_id"] for line in lines] == [f"s{i}" for i in range(40)]
    for line in lines:
        assert len(line["movieIndices"]) == 5 == len(set(line["movieIndices"]))
        assert line["titles"] == [titles[str(m)] for m in line["movieIndices"]]
        assert line["scores"] == sorted(line["scores"], reverse=True) and 0 < sum(line["scores"]) <= 1
    # the same ranking as the evaluation's scorer gives for these sessions
    run = load_run(tiny_run)
    item_of = dict(zip(mapping["movie_index"], mapping["item_id"]))
    movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
    encoded = ItemSequences.from_lists([[item_of[m] for m in s] for s in sessions])
    scores = model_scorer(run.model, max_sequence_length(run.schema))(encoded, slice(0, 40))
    movies = movie_ids(scores.shape[1])
    best = movies[np.argmax(scores[:, movies], axis=1)]
    assert [line["movieIndices"][0] for line in lines] == [movie_of[i] for i in best]


def test_unknown_empty_and_long_sessions_have_documented_answers(tiny_run, tiny_data):
    recommender = Recommender(load_run(tiny_run))
    sessions, _ = _raw_sessions(tiny_data, 1)
    known = sessions[0]
    long_session = known * 10  # far longer than max_seq_length
    results = recommender.recommend([known + [10**9], [], [10**9, -5], long_session, long_session[-19:]], top_k=3)
    with_unknown, empty, all_unknown, long_one, its_tail = results
    assert with_unknown.unknown_movies == [10**9] and with_unknown.fallback is None
    assert with_unknown.movies == recommender.recommend([known], top_k=3)[0].movies
    assert empty.fallback == "most_popular" and all_unknown.fallback == "most_popular"
    assert all_unknown.unknown_movies == [10**9, -5] and len(empty.movies) == 3
    assert long_one.movies == its_tail.movies  # only the most recent max_seq_length - 1 movies count
    excluded = recommender.recommend([known], top_k=10, exclude_seen=True)[0]
    assert not set(excluded.movies) & set(known)


def test_parquet_input_and_cli(tiny_run, tiny_data, tmp_path, capsys):
    sessions, _ = _raw_sessions(tiny_data, 5)
    pd.DataFrame({"session_id": range(5), "movieIndices": sessions}).to_parquet(tmp_path / "s.parquet")
    code = main(["predict", "--run", str(tiny_run), "--input", str(tmp_path / "s.parquet"), "--output", str(tmp_path / "p.jsonl"), "--top-k", "2"])
    assert code == 0 and "top-2 for 5 sessions" in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["session_id"] for line in lines] == list(range(5))


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"movieIndices": [1, 2]}\n{"movieIndices": [1,\n', "line 2: not valid JSON"),
        ('{"session_id": 1}\n', "line 1: expected an object with 'movieIndices'"),
        ('{"movieIndices": [1, "x"]}\n', "line 1: 'movieIndices' must be a list of integer movie ids"),
    ],
)
def test_bad_sessions_file_names_the_line(tiny_run, tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(PredictInputError, match=message):
        predict(tiny_run, tmp_path / "bad.jsonl", tmp_path / "out.jsonl")


def test_cli_errors_are_messages(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path), "--input", "x.jsonl", "--output", "o.jsonl"]) == 1
    assert "sessions file not found" in capsys.readouterr().err
    (tmp_path / "s.jsonl").write_text('{"movieIndices": [1]}\n')
    assert main(["predict", "--run", str(tmp_path), "--input", str(tmp_path / "s.jsonl"), "--output", "o.jsonl"]) == 1
    assert "is not a training run" in capsys.readouterr().err
