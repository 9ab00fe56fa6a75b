"""``t4r-app cut``: an earlier day of the same log, in the layout preprocess reads."""

from __future__ import annotations

import json

import pytest
from conftest import decoded, run

from t4r_app.cli import main
from t4r_app.data.sources import IMPORT_INCOMPLETE
from t4r_app.input_layout.time_cut import cut_before, timestamp_quantile
from t4r_app.errors import InputError


def test_a_cut_keeps_what_came_before_and_counts_the_rest(fixture_dataset, tmp_path):
    # Before 150: user 7 keeps only 10@100 (its record 10@100 14@150 11@200 is cut inside; the
    # records 12,13@300 and 15@400 are wholly after); user 3 (times 50..80) keeps everything.
    stats = cut_before(str(fixture_dataset), tmp_path / "day1", 150)
    assert (stats.records_read, stats.records_written, stats.records_emptied) == (5, 3, 2)
    assert (stats.interactions_read, stats.interactions_written, stats.interactions_cut) == (12, 7, 5)
    assert stats.interactions_read == stats.interactions_written + stats.interactions_cut
    titles = json.loads((tmp_path / "day1" / "recommendation" / "movie_title_by_index.json").read_text())
    assert sorted(map(int, titles)) == [10, 30, 31, 32, 33, 34, 35]  # the day's catalogue: movies watched by then
    assert (stats.titles_read, stats.titles_written) == (30, 7)
    assert not (tmp_path / "day1" / IMPORT_INCOMPLETE).exists()
    assert json.loads((tmp_path / "day1" / "cut_stats.json").read_text())["cutoff"] == 150
    run(tmp_path / "day1", tmp_path / "data")
    assert decoded(tmp_path / "data", "sequences") == {7: [10], 3: [30, 31, 32, 33, 34, 35]}


def test_the_cut_off_may_be_a_quantile_and_bad_ones_are_refused(fixture_dataset, tmp_path, capsys):
    # The 12 timestamps sorted: 50 60 60 60 70 80 100 150 200 300 300 400; numpy's "lower" median is 80.
    assert timestamp_quantile(str(fixture_dataset), 0.5) == 80
    assert main(["cut", "--input", str(fixture_dataset), "--output", str(tmp_path / "half"), "--before-quantile", "0.5"]) == 0
    assert "80 (the 0.5 quantile of the timestamps)" in capsys.readouterr().out
    assert json.loads((tmp_path / "half" / "cut_stats.json").read_text())["interactions_written"] == 5
    with pytest.raises(SystemExit) as usage:
        main(["cut", "--input", str(fixture_dataset), "--output", str(tmp_path / "x"), "--before-quantile", "1.5"])
    assert usage.value.code == 2 and "strictly between 0 and 1" in capsys.readouterr().err
    with pytest.raises(InputError, match="no interaction .* is before 10"):
        cut_before(str(fixture_dataset), tmp_path / "empty", 10)
    with pytest.raises(InputError, match="holds the input"):
        cut_before(str(fixture_dataset / "recommendation"), fixture_dataset, 150)
