"""Asking a running Triton server for recommendations, with the same answers as in-process.

The server returns raw movie ids and scores; titles, unknown ids and the popularity fallback
are filled in here from the run's movie mapping, so ``predict --server`` and ``recommend
--server`` print exactly what their in-process forms print. Whether seen movies are left
out is the served ensemble's rule (fixed at export, read from the model's config).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from t4r_app.errors import ServerError
from t4r_app.serve.export import ENSEMBLE_NAME
from t4r_app.serve.recommender import FALLBACK, Recommendation
from t4r_app.model.saved_run import known_movies
from t4r_app.serve.ensemble_ops import (
    EXCLUDE_SEEN_PARAMETER,
    MAX_MOVIES_PER_REQUEST,
    MAX_SESSIONS_PER_REQUEST,
    MOVIE_IDS,
    NO_MOVIE,
    OFFSETS_INPUT,
    SCORES,
    VALUES_INPUT,
)

GRPC_DEFAULT_PORT = 8001


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ServerError(f"--server must look like HOST:PORT, got '{address}'")
    return host, int(port)


def request_batches(sessions: list[list[int]]) -> list[tuple[int, int]]:
    """(start, stop) runs of sessions that each fit in one request (the server's limits)."""
    batches, start, movies = [], 0, 0
    for index, session in enumerate(sessions):
        full = index - start >= MAX_SESSIONS_PER_REQUEST or movies + len(session) > MAX_MOVIES_PER_REQUEST
        if full and index > start:  # a single session over the movie limit goes alone; the server says why
            batches.append((start, index))
            start, movies = index, 0
        movies += len(session)
    if len(sessions) > start or not batches:
        batches.append((start, len(sessions)))
    return batches


def encode_request(sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """A batch of sessions as merlin's ragged pair: flat values and row offsets."""
    lengths = [len(session) for session in sessions]
    values = np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions]) if sum(lengths) else np.zeros(0, np.int64)
    offsets = np.zeros(len(sessions) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return values, offsets


class TritonRecommender:
    """Same ``recommend`` as ``Recommender``, answered by a Triton server."""

    def __init__(self, address: str, run_dir: str | Path, protocol: str | None = None):
        host, port = parse_address(address)
        self.protocol = protocol or ("grpc" if port == GRPC_DEFAULT_PORT else "http")
        if self.protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self.module = client_module
        self.client = client_module.InferenceServerClient(f"{host}:{port}")
        self.address = address
        mapping = known_movies(run_dir)
        self.known_movies = set(mapping["movie_index"].tolist())
        self.title_of_movie = dict(zip(mapping["movie_index"].tolist(), mapping["title"].fillna("").tolist()))
        self._exclude_seen: bool | None = None

    def close(self) -> None:
        self.client.close()

    def _ask(self, request):
        try:
            return request()
        except Exception as error:  # tritonclient raises its own exception types per protocol
            raise ServerError(f"{self.protocol} request to {self.address} failed: {error}") from None

    def served_top_k(self) -> int:
        """How many movies the exported ensemble answers per session."""
        metadata = self._ask(lambda: self.client.get_model_metadata(ENSEMBLE_NAME))
        if isinstance(metadata, dict):  # HTTP answers JSON, gRPC a protobuf message
            outputs = {output["name"]: output["shape"] for output in metadata["outputs"]}
        else:
            outputs = {output.name: list(output.shape) for output in metadata.outputs}
        return int(outputs[MOVIE_IDS][-1])

    def served_exclude_seen(self) -> bool:
        """Whether the served ensemble leaves a session's own movies out (fixed at export)."""
        if self._exclude_seen is None:
            if self.protocol == "grpc":
                config = self._ask(lambda: self.client.get_model_config(ENSEMBLE_NAME, as_json=True))["config"]
            else:
                config = self._ask(lambda: self.client.get_model_config(ENSEMBLE_NAME))
            # Ensembles exported before the rule existed have no parameter and rank every movie.
            parameter = config.get("parameters", {}).get(EXCLUDE_SEEN_PARAMETER, {})
            self._exclude_seen = json.loads(parameter.get("string_value", "false"))
        return self._exclude_seen

    def infer(self, sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids and scores for any number of sessions, in as many requests as the server's limits need."""
        answers = [self._infer_one(sessions[start:stop]) for start, stop in request_batches(sessions)]
        if len(answers) == 1:
            return answers[0]
        return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])

    def _infer_one(self, sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        values, offsets = encode_request(sessions)
        inputs = [
            self.module.InferInput(VALUES_INPUT, list(values.shape), "INT64"),
            self.module.InferInput(OFFSETS_INPUT, list(offsets.shape), "INT32"),
        ]
        inputs[0].set_data_from_numpy(values)
        inputs[1].set_data_from_numpy(offsets)
        result = self._ask(lambda: self.client.infer(ENSEMBLE_NAME, inputs))
        return result.as_numpy(MOVIE_IDS), result.as_numpy(SCORES)

    def recommend(
        self, sessions: list[list[int]], session_ids: list | None = None, top_k: int = 10, exclude_seen: bool | None = None
    ) -> list[Recommendation]:
        """Top-k from the server; ``exclude_seen`` None takes the served rule, which a request cannot change."""
        served = self.served_exclude_seen()
        if exclude_seen is not None and exclude_seen != served:
            asked, rule = ("--exclude-seen", "keeps") if exclude_seen else ("--keep-seen", "leaves out")
            raise ServerError(
                f"{asked} cannot be applied with --server: the ensemble at {self.address} {rule} the session's own "
                f"movies, as exported; export again with {asked}, or leave --server out to answer in this process"
            )
        session_ids = session_ids if session_ids is not None else list(range(len(sessions)))
        movies, scores = self.infer(sessions)
        if top_k > movies.shape[1]:
            raise ServerError(f"the server answers the top {movies.shape[1]}; export again with --top-k {top_k} for more")
        results = []
        for index, session in enumerate(sessions):
            unknown = [movie for movie in session if movie not in self.known_movies]
            answered = movies[index, :top_k] != NO_MOVIE  # rows end early when seen movies leave fewer than k
            best = movies[index, :top_k][answered].tolist()
            results.append(
                Recommendation(
                    session_id=session_ids[index],
                    movies=best,
                    scores=[float(s) for s in scores[index, :top_k][answered]],
                    titles=[self.title_of_movie.get(m, "") for m in best],
                    unknown_movies=unknown,
                    fallback=FALLBACK if len(unknown) == len(session) else None,
                    exclude_seen=served,
                )
            )
        return results
