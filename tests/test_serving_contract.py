"""The client/server contract (``serve/contract.py``) without a server: request checks, request splitting, client errors.

Fast on purpose (``tests/test_serving.py``, which starts tritonserver, is marked slow), so
``make test-fast`` keeps these rules checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from t4r_app.errors import ServerError
from t4r_app.serve.contract import (
    MAX_MOVIES_PER_REQUEST,
    MAX_SESSIONS_PER_REQUEST,
    MOVIE_TITLES_PARAMETER,
    decode_movie_titles,
    encode_request,
    merge_requests,
    request_problem,
)
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import free_port


def test_client_errors_are_clear(tiny_run):
    with pytest.raises(ServerError, match="HOST:PORT"):
        TritonRecommender("localhost", tiny_run)
    client = TritonRecommender(f"127.0.0.1:{free_port()}", tiny_run)
    with pytest.raises(ServerError, match="request to 127.0.0.1"):
        client.recommend([[1, 2]])


def test_request_check_names_the_problem():
    from t4r_app.serve.contract import request_problem

    values = np.array([5, 6, 7], dtype=np.int64)
    assert request_problem(values, np.array([0, 1, 3], dtype=np.int32)) is None
    assert request_problem(values, np.array([0, 0, 0, 3], dtype=np.int32)) is None  # empty sessions are fine
    assert "needs both" in request_problem(values, None)
    assert "one more entry" in request_problem(values, np.array([0], dtype=np.int32))
    assert "never decrease" in request_problem(values, np.array([0, 2, 1, 3], dtype=np.int32))
    assert "end at the number of values (3)" in request_problem(values, np.array([0, 4], dtype=np.int32))
    assert "one-dimensional" in request_problem(values.reshape(1, 3), np.array([0, 3], dtype=np.int32))
    many = np.zeros(MAX_SESSIONS_PER_REQUEST + 2, dtype=np.int32)
    assert request_problem(np.zeros(0, np.int64), many[:-1]) is None  # exactly the limit of (empty) sessions
    assert f"at most {MAX_SESSIONS_PER_REQUEST} sessions, got {MAX_SESSIONS_PER_REQUEST + 1}" in request_problem(np.zeros(0, np.int64), many)
    long = np.zeros(MAX_MOVIES_PER_REQUEST + 1, dtype=np.int64)
    assert request_problem(long[:-1], np.array([0, MAX_MOVIES_PER_REQUEST], dtype=np.int32)) is None
    assert "at most 1000000 movies" in request_problem(long, np.array([0, len(long)], dtype=np.int32))


def test_large_batches_are_split_into_requests_that_fit():
    from t4r_app.serve.contract import request_batches

    assert request_batches([]) == [(0, 0)]
    assert request_batches([[1]] * 2050) == [(0, 1024), (1024, 2048), (2048, 2050)]
    half = [0] * (MAX_MOVIES_PER_REQUEST // 2 + 1)
    assert request_batches([half, half, [1]]) == [(0, 1), (1, 3)]
    assert request_batches([[0] * (MAX_MOVIES_PER_REQUEST + 1), [1]]) == [(0, 1), (1, 2)]  # the server says why


def test_a_catalogue_kept_in_the_config_by_earlier_exports_is_still_read():
    written = json.dumps({"12": "Heat (1995)", "7": "Café Society (2016)"})  # what those exports wrote
    parameters = {MOVIE_TITLES_PARAMETER: {"string_value": written}}
    assert decode_movie_titles(parameters) == {12: "Heat (1995)", 7: "Café Society (2016)"}
    assert decode_movie_titles({}) is None  # exported before either: the client says what is missing


def test_requests_merged_into_one_pass_split_back_into_their_own_sessions():
    first, second, third = ([[5, 6], [7]], [[]], [[8, 9, 10], [11], [12]])
    pairs = [encode_request(sessions) for sessions in (first, second, third)]
    values, offsets, counts = merge_requests(pairs)
    assert counts == [2, 1, 3]
    assert values.tolist() == [5, 6, 7, 8, 9, 10, 11, 12] and offsets.tolist() == [0, 2, 3, 3, 6, 7, 8]
    batched = encode_request(first, batched=True)
    assert batched[0].shape == (1, 3) and batched[1].tolist() == [[0, 2, 3]]
    assert "one batch row" in request_problem(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int32))
