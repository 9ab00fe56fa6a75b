"""`t4r-app recommend`: titles matched by a clear rule, a ranked table or JSON, clear errors."""

from __future__ import annotations

import json

import pytest
from test_predict import with_seen_rule

from t4r_app.cli import main
from t4r_app.errors import RunError, SessionError, TitleError
from t4r_app.model.saved_run import load_run
from t4r_app.serve.predict import make_recommender
from t4r_app.serve.contract import recommend_one
from t4r_app.serve.recommender import Recommender
from t4r_app.serve.titles import find_movie

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
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error
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


def test_one_session_rule_refuses_empty_and_unknown_sessions_and_lists_unknown_ids(tiny_run):
    recommender = Recommender(load_run(tiny_run))
    known = sorted(recommender.title_of_movie)[:2]
    with pytest.raises(SessionError, match="^the session is empty: give --session 12,45,7 or --titles 'Title \\(Year\\)' ...$"):
        recommend_one(recommender, [])
    with pytest.raises(SessionError, match="^none of the session's movies is known to the model \\(unknown ids: 99999, -5\\)$"):
        recommend_one(recommender, [99999, -5])
    answer = recommend_one(recommender, [known[0], 99999], top_k=4, exclude_seen=False)
    assert answer.unknown_movies == [99999] and answer.fallback is None
    assert answer.movies == recommender.recommend([[known[0]]], top_k=4, exclude_seen=False)[0].movies
    by_title = recommend_one(recommender, [known[0]], top_k=4, titles=[recommender.title_of_movie[known[1]]])
    assert by_title.movies == recommender.recommend([known], top_k=4)[0].movies


def test_without_a_run_or_a_server_there_is_nothing_to_answer_with():
    with pytest.raises(RunError, match="give --run RUN_DIR .* or --server HOST:PORT"):
        make_recommender(None, None)
