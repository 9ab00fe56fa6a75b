"""A new model version into a live server: written beside the served one, switched under load
without a failed request, each answer wholly one version's, and the switch refused without the key."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from t4r_app.cli import main
from t4r_app.data.item_sequences import read_split
from t4r_app.errors import ExportError, RunError
from t4r_app.serve.export import EXPORT_INFO, export_run
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import TritonServer, free_port
from t4r_app.serve.versions import ADMIN_HEADER, ADMIN_KEY_FILE, add_version, versions

pytestmark = pytest.mark.slow  # tritonserver

TOP_K = 5


def _sessions(tiny_data) -> list[list[int]]:
    mapping = pd.read_parquet(tiny_data / "item_mapping.parquet")
    movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
    items = read_split(tiny_data, "test").items
    return [[int(movie_of[i]) for i in items.row(r)] for r in range(40)]


def _load(server, model, key):
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/models/{model}/load", data=b"{}", method="POST")
    if key is not None:
        request.add_header(ADMIN_HEADER, key)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_new_version_is_switched_to_under_load_without_a_failed_request(tiny_run, tiny_data, tmp_path):
    # Two versions that answer differently: the same model with and without the session's own movies.
    repository = export_run(tiny_run, tmp_path / "repo", target="cpu", top_k=TOP_K, exclude_seen=False)
    sessions = _sessions(tiny_data)
    answers: list[tuple[float, int, list[int]]] = []  # (when sent, session, answer)
    failures: list[str] = []
    stop = threading.Event()
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        def ask(worker: int) -> None:
            client = TritonRecommender(server.http_url, tiny_run, "http")
            index = worker
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    movies, _ = client.infer([sessions[index % len(sessions)]])
                    answers.append((sent, index % len(sessions), movies[0].tolist()))
                except Exception as error:  # any failed request fails the test
                    failures.append(str(error))
                index += 3
            client.close()

        threads = [threading.Thread(target=ask, args=(worker,)) for worker in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        assert _load(server, "executor_model", None) == 403  # no key: refused, whoever can ask for answers
        assert _load(server, "executor_model", "not-the-key") == 403
        assert main(["export", "--run", str(tiny_run), "--into", str(repository), "--exclude-seen",
                     "--server", server.http_url]) == 0  # fmt: skip
        switched = time.monotonic()
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    old = {i: a.movies for i, a in enumerate(_in_process(tiny_run, sessions, exclude_seen=False))}
    new = {i: a.movies for i, a in enumerate(_in_process(tiny_run, sessions, exclude_seen=True))}
    assert any(old[i] != new[i] for i in old)  # the two versions are told apart
    for _, index, movies in answers:
        assert movies in (old[index], new[index])  # each answer wholly one version's
    after = [(index, movies) for sent, index, movies in answers if sent > switched]  # asked once the switch returned
    assert after and all(movies == new[index] for index, movies in after)
    assert any(movies == old[index] != new[index] for sent, index, movies in answers if sent < switched)
    assert versions(repository) == [1, 2] and json.loads((repository / EXPORT_INFO).read_text())["exclude_seen"] is True
    assert (repository / ADMIN_KEY_FILE).stat().st_mode & 0o077 == 0  # the key is its owner's only


def test_a_new_version_keeps_the_served_shape_and_a_failed_one_leaves_nothing(tiny_run, tmp_path):
    repository = export_run(tiny_run, tmp_path / "repo", target="cpu", top_k=TOP_K)
    with pytest.raises(RunError):
        add_version(tmp_path / "no-run", repository)
    assert versions(repository) == [1] and not list(tmp_path.glob(".repo.next-*"))  # nothing half-written left
    assert add_version(tiny_run, repository) == 2 and add_version(tiny_run, repository) == 3
    assert versions(repository) == [2, 3]  # the new one and the one answering until the switch
    assert json.loads((repository / EXPORT_INFO).read_text())["top_k"] == TOP_K
    with pytest.raises(ExportError, match="not an exported repository"):
        add_version(tiny_run, tmp_path / "nothing")


def _in_process(run_dir, sessions, exclude_seen):
    from t4r_app.model.saved_run import load_run
    from t4r_app.serve.recommender import Recommender

    return Recommender(load_run(run_dir)).recommend(sessions, top_k=TOP_K, exclude_seen=exclude_seen)


def test_new_movies_are_answered_with_their_titles_right_after_the_switch(tiny_run, day2_run, tmp_path):
    from conftest import NEW_MOVIES

    repository = export_run(tiny_run, tmp_path / "repo", target="cpu", top_k=TOP_K, exclude_seen=False)
    session = [1000, 1001, 1000, 1002, 1000]  # the day-2 users' favourites, unknown to day 1
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        client = TritonRecommender(server.http_url, None, "http")  # one long-lived client: its catalogue is day 1's
        before = client.recommend([session], top_k=TOP_K)[0]
        assert set(before.unknown_movies) == set(NEW_MOVIES) and not set(before.movies) & set(NEW_MOVIES)
        assert main(["export", "--run", str(day2_run), "--into", str(repository), "--server", server.http_url]) == 0
        after = client.recommend([session], top_k=TOP_K)[0]
        client.close()
    expected = _in_process(day2_run, [session], exclude_seen=False)[0]
    assert set(expected.movies) & set(NEW_MOVIES)  # the updated model recommends new movies...
    assert after.movies == expected.movies  # ...and the server answers as it does in process,
    assert after.titles == expected.titles and after.unknown_movies == []  # named by the catalogue asked again
    assert any(title.startswith("A New Movie") for title in after.titles)
