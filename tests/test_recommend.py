"""`t4r-app recommend`: titles matched by a clear rule, a ranked table or JSON, clear errors."""

from __future__ import annotations

import json

import pytest

from t4r_app.cli import main
from test_predict import with_seen_rule
from t4r_app.serve.recommender import Recommender
from t4r_app.model.saved_run import load_run
from t4r_app.serve.titles import find_movie
from t4r_app.errors import TitleError

TITLES = {1: "Alien (1979)", 2: "Aliens (1986)", 3: "Heat (1995)", 4: "heat (1972)", 5: "Casablanca (1942)"}


def test_title_rule_exact_then_case_then_unique_substring():
    assert find_movie("Aliens (1986)", TITLES) == 2
    assert find_movie("casablanca (1942)", TITLES) == 5
    assert find_movie("casablanca", TITLES) == 5
    assert find_movie("Heat (1995)", TITLES) == 3  # exact beats the case-folded twin
    with pytest.raises(TitleError, match="'alien' matches 2 movies: Alien \\(1979\\) \\(movie 1\\); Aliens"):
        find_movie("alien", TITLES)
    assert find_movie("HEAT (1995)", TITLES) == 3
    with pytest.raises(TitleError, match="'HEAT' matches 2 movies"):
        find_movie("HEAT", TITLES)
    with pytest.raises(TitleError, match="did you mean: Casablanca \\(1942\\)"):
        find_movie("Casablanka (1942)", TITLES)


def test_recommend_prints_a_ranked_table_matching_the_model(tiny_run, capsys):
    recommender = Recommender(load_run(tiny_run))
    movies = sorted(recommender.title_of_movie)[:3]
    expected = recommender.recommend([movies], top_k=4)[0]
    title = recommender.title_of_movie[movies[2]]
    session = ",".join(map(str, movies[:2]))
    assert main(["recommend", "--run", str(tiny_run), "--session", session, "--titles", title.upper(), "--top-k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "title", "movie", "score"] and len(lines) == 5
    assert [int(line.split()[-2]) for line in lines[1:]] == expected.movies
    assert main(["recommend", "--run", str(tiny_run), "--session", session, "--json", "--exclude-seen"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["movieIndices"]) == 10 and not set(answer["movieIndices"]) & set(movies[:2])


def test_recommend_errors_are_messages(tiny_run, capsys):
    known = sorted(Recommender(load_run(tiny_run)).title_of_movie)[0]
    assert main(["recommend", "--run", str(tiny_run)]) == 1
    assert "the session is empty" in capsys.readouterr().err
    assert main(["recommend", "--run", str(tiny_run), "--session", "99999"]) == 1
    assert "none of the session's movies is known" in capsys.readouterr().err
    assert main(["recommend", "--run", str(tiny_run), "--session", f"{known},99999"]) == 0
    assert "left out movie ids the model does not know: 99999" in capsys.readouterr().err
    assert main(["recommend", "--run", str(tiny_run), "--titles", "no such film"]) == 1
    assert "no movie titled 'no such film'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["recommend", "--run", str(tiny_run), "--session", "1,x"])


def test_recommend_follows_the_runs_seen_movie_rule_unless_told(tiny_run, tmp_path, capsys):
    strict = with_seen_rule(tiny_run, tmp_path / "strict", exclude_seen=True)
    recommender = Recommender(load_run(strict))
    # the movies the model ranks highest for themselves: what leaving seen movies out must drop
    session = recommender.recommend([[]], top_k=3, exclude_seen=False)[0].movies
    ids = ",".join(map(str, session))

    def answer(*flags):
        assert main(["recommend", "--run", str(strict), "--session", ids, "--json", *flags]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err

    excluded, note = answer()
    assert excluded["exclude_seen"] is True and not set(excluded["movieIndices"]) & set(session)
    assert "left out of its recommendations (the run's rule, see run.json)" in note
    kept, note = answer("--keep-seen")
    assert kept["exclude_seen"] is False and "(--keep-seen)" in note
    assert kept["movieIndices"] == recommender.recommend([session], exclude_seen=False)[0].movies
