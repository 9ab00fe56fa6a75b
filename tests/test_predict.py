"""Batch prediction: raw ids in, raw ids and titles out, awkward sessions handled, bad files named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from t4r_app.cli import main
from t4r_app.data.item_sequences import ItemSequences, read_split
from t4r_app.errors import PredictInputError
from t4r_app.evaluate.protocol import model_scorer
from t4r_app.model.saved_run import load_run
from t4r_app.serve.predict import predict
from t4r_app.serve.recommender import Recommender, TopKRanker, top_k_order
from workflow.columns import movie_ids


def with_seen_rule(run_dir: Path, destination: Path, exclude_seen: bool) -> Path:
    """A copy of a run whose run.json records the seen-movie rule as training records it
    (``resolve_exclude_seen`` when the model is saved): the run tests must not write into."""
    shutil.copytree(run_dir, destination, ignore=shutil.ignore_patterns("checkpoints", "triton", "eval*", "report.md"))
    info = json.loads((destination / "run.json").read_text())
    info.update(exclude_seen=exclude_seen, exclude_seen_reason=f"serve.exclude_seen={str(exclude_seen).lower()} (test)")
    (destination / "run.json").write_text(json.dumps(info))
    return destination


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
    scores = model_scorer(run.model, run.session_length)(encoded, slice(0, 40))
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


def _predicted(main_args, output):
    assert main(main_args + ["--output", str(output)]) == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_the_runs_seen_movie_rule_is_the_default_and_the_flags_override_it(tiny_run, tiny_data, tmp_path, capsys):
    sessions, _ = _raw_sessions(tiny_data, 40)
    source = _write_jsonl(tmp_path / "in.jsonl", [{"movieIndices": s} for s in sessions])
    strict = with_seen_rule(tiny_run, tmp_path / "strict", exclude_seen=True)
    overlaps = lambda lines: [set(line["movieIndices"]) & set(s) for line, s in zip(lines, sessions)]  # noqa: E731

    excluded = _predicted(["predict", "--run", str(strict), "--input", str(source)], tmp_path / "a.jsonl")
    assert "are left out of its recommendations (the run's rule, see run.json)" in capsys.readouterr().out
    assert all(line["exclude_seen"] is True for line in excluded) and not any(overlaps(excluded))
    kept = _predicted(["predict", "--run", str(strict), "--input", str(source), "--keep-seen"], tmp_path / "b.jsonl")
    assert "are kept in its recommendations (--keep-seen)" in capsys.readouterr().out
    assert all(line["exclude_seen"] is False for line in kept) and any(overlaps(kept))  # the data repeat movies
    # a run from before the rule (no exclude_seen in run.json) keeps seen movies, as it always did
    old = _predicted(["predict", "--run", str(tiny_run), "--input", str(source)], tmp_path / "c.jsonl")
    assert [line["movieIndices"] for line in old] == [line["movieIndices"] for line in kept]
    forced = _predicted(["predict", "--run", str(tiny_run), "--input", str(source), "--exclude-seen"], tmp_path / "d.jsonl")
    assert [line["movieIndices"] for line in forced] == [line["movieIndices"] for line in excluded]
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error
        main(["predict", "--run", str(tiny_run), "--input", str(source), "--output", "x", "--exclude-seen", "--keep-seen"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_leaving_seen_movies_out_never_pads_with_them():
    popularity = np.array([0, 0, 0, 0.4, 0.3, 0.2, 0.1, 0])  # ids 3..6 are movies, 7 is [MASK]
    scorer = TopKRanker(lambda batch: np.zeros((len(batch), 8)), session_length=3, popularity=popularity)
    orders, scores, fallback = scorer.top_k([[], [3, 4, 5], [3, 4, 5, 6]], top_k=3, exclude_seen=True)
    assert [o.tolist() for o in orders] == [[3, 4, 5], [6], []]  # fewer left than asked: a shorter answer
    assert fallback.tolist() == [True, False, False] and len(scores[1]) == 1
    orders, _, _ = scorer.top_k([[3, 4, 5]], top_k=3)
    assert orders[0].tolist() == [3, 4, 5]  # equal model scores: ties keep id order


def test_scores_are_softmax_probabilities_over_the_movies_whatever_is_left_out():
    logits = np.array([[5.0, 5.0, 5.0, 2.0, 1.0, 0.5, 3.0, 9.0]], dtype=np.float32)  # ids 0-2 and 7 are not movies
    popularity = np.array([0, 0, 0, 0.4, 0.3, 0.2, 0.1, 0])
    ranker = TopKRanker(lambda batch: np.repeat(logits, len(batch), axis=0), session_length=3, popularity=popularity)
    movies = logits[0, 3:7].astype(np.float64)
    expected = np.exp(movies) / np.exp(movies).sum()  # over ids 3..6 only
    orders, scores, _ = ranker.top_k([[4], [4]], top_k=4)
    assert orders[0].tolist() == [6, 3, 4, 5] and np.allclose(scores[0], expected[[3, 0, 1, 2]], atol=1e-6)
    orders, scores, _ = ranker.top_k([[4]], top_k=4, exclude_seen=True)  # the seen movie keeps its share
    assert orders[0].tolist() == [6, 3, 5] and np.allclose(scores[0], expected[[3, 0, 2]], atol=1e-6)


def test_top_k_without_a_full_sort_equals_the_stable_full_sort():
    rng = np.random.default_rng(0)
    for _ in range(300):
        rows, columns = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        scores = rng.integers(0, 4, (rows, columns)).astype(np.float32)  # many ties
        if rng.random() < 0.5:
            scores = rng.random((rows, columns)).astype(np.float32)  # no ties: topk's set alone
        scores[rng.random((rows, columns)) < 0.3] = -np.inf  # movies left out
        k = int(rng.integers(0, columns + 3))
        expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, columns)]
        assert np.array_equal(top_k_order(torch.as_tensor(scores, dtype=torch.float32), k).numpy(), expected), (scores, k)


def test_predict_streams_in_chunks_with_the_same_answers_and_writes_nothing_on_a_late_error(tiny_run, tiny_data, tmp_path):
    sessions, _ = _raw_sessions(tiny_data, 23)
    source = _write_jsonl(tmp_path / "in.jsonl", [{"movieIndices": s} for s in sessions] + [{"movieIndices": []}])
    whole = predict(tiny_run, source, tmp_path / "whole.jsonl")
    chunked = predict(tiny_run, source, tmp_path / "chunked.jsonl", chunk=5)
    lines = [[json.loads(line) for line in (tmp_path / name).read_text().splitlines()] for name in ("whole.jsonl", "chunked.jsonl")]
    # The same movies; scores equal up to float rounding (a batch of another size may sum in another order).
    assert [line["movieIndices"] for line in lines[0]] == [line["movieIndices"] for line in lines[1]]
    assert np.allclose([line["scores"] for line in lines[0]], [line["scores"] for line in lines[1]], rtol=1e-6)
    assert chunked.sessions == whole.sessions == 24 and chunked.fallbacks == 1 and chunked.sessions_per_second > 0
    # Line 30, after several chunks were answered: the old output stays as it was, no partial file is left.
    broken = tmp_path / "broken.jsonl"
    broken.write_text(source.read_text() + "\n" * 5 + "{not json\n")
    with pytest.raises(PredictInputError, match="line 30"):
        predict(tiny_run, broken, tmp_path / "chunked.jsonl", chunk=5)
    assert [json.loads(line) for line in (tmp_path / "chunked.jsonl").read_text().splitlines()] == lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jsonl", "chunked.jsonl", "in.jsonl", "whole.jsonl"]
