"""Asking a running Triton server for recommendations, with the same answers as in-process.

The server returns raw movie ids and scores; titles, unknown ids and the popularity fallback
are filled in here, so ``predict --server`` and ``recommend --server`` print exactly what their
in-process forms print. The movies and titles come from the run when one is given, else from
the server's ``movie_catalogue`` model (asked once, and again when an answer names a movie it
lacks, as after a switch to a version with new movies; exports from before it kept them in the
ensemble's config, which is read then). Whether seen movies are left
out is the served ensemble's rule (fixed at export, read from the same config).

Light on purpose: tritonclient, numpy and the serving contract only, so a machine that only asks a
server needs neither torch nor Merlin; a run, when given, is read only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t4r_app.errors import ServerError
from t4r_app.serve.contract import (
    CATALOGUE_MODEL,
    CATALOGUE_MOVIES,
    CATALOGUE_TITLES,
    ENSEMBLE_NAME,
    MOVIE_IDS,
    NO_MOVIE,
    OFFSETS_INPUT,
    SCORES,
    VALUES_INPUT,
    Recommendation,
    decode_exclude_seen,
    decode_movie_titles,
    encode_request,
    fallback_for,
    request_batches,
    split_session,
)

GRPC_DEFAULT_PORT = 8001


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ServerError(f"--server must look like HOST:PORT, got '{address}'")
    return host, int(port)


@dataclass
class MovieCatalogue:
    """The movies a session may hold and their titles, as the client knows them."""

    title_of_movie: dict[int, str]  # empty where no titles are at hand
    known: set[int] | None  # None: cannot tell, every id counts as known
    note: str = ""  # what the answers lack, for whoever reads them; "" when nothing


def no_catalogue_note(address: str) -> str:
    return (
        f"the ensemble at {address} was exported before t4r-app served its movie titles: "
        "answers carry raw movie ids without titles, and unknown movie ids are neither left out nor listed; "
        "pass --run RUN_DIR (the run it was exported from) or export it again"
    )


class TritonRecommender:
    """Same ``recommend`` as ``Recommender``, answered by a Triton server.

    ``run_dir`` None: titles and known movies come from the server (read once, at first need).
    """

    def __init__(self, address: str, run_dir: str | Path | None = None, transport: str | None = None):
        host, port = parse_address(address)
        self.transport = transport or ("grpc" if port == GRPC_DEFAULT_PORT else "http")
        if self.transport == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self.module = client_module
        self.client = client_module.InferenceServerClient(f"{host}:{port}")
        self.address = address
        self._parameters: dict | None = None
        self._shapes: dict[str, list[int]] | None = None
        self._catalogue = None if run_dir is None else _run_catalogue(run_dir)
        self._catalogue_served = run_dir is None  # asked of the server, so it may go stale after a version switch

    def close(self) -> None:
        self.client.close()

    @property
    def catalogue(self) -> MovieCatalogue:
        if self._catalogue is None:
            title_of_movie = self._served_catalogue()
            if title_of_movie is None:
                self._catalogue = MovieCatalogue({}, None, no_catalogue_note(self.address))
            else:
                self._catalogue = MovieCatalogue(title_of_movie, set(title_of_movie))
        return self._catalogue

    @property
    def title_of_movie(self) -> dict[int, str]:
        return self.catalogue.title_of_movie

    @property
    def catalogue_note(self) -> str:
        """What the answers lack (titles, unknown ids) and how to get it; "" when nothing."""
        return self.catalogue.note

    def _current_catalogue(self, answered: np.ndarray) -> MovieCatalogue:
        """The cached catalogue, asked again once when the server answered a movie it lacks: a new
        model version with new movies was switched to since it was read (``export --into``). A
        movie the server does not know never triggers this: only answers do."""
        catalogue = self.catalogue
        if self._catalogue_served and catalogue.known is not None and not catalogue.known.issuperset(answered.tolist()):
            self._catalogue = None
            catalogue = self.catalogue
        return catalogue

    def _ask(self, request):
        try:
            return request()
        except Exception as error:  # tritonclient raises its own exception types per transport
            raise ServerError(f"{self.transport} request to {self.address} failed: {error}") from None

    def _served_catalogue(self) -> dict[int, str] | None:
        """{movie id: title} from the server's catalogue model, or from the ensemble's config
        for exports from before it; None when the server has neither."""
        if not self._ask(lambda: self.client.is_model_ready(CATALOGUE_MODEL)):
            return decode_movie_titles(self._served_parameters())
        result = self._ask(lambda: self.client.infer(CATALOGUE_MODEL, []))
        titles = (title.decode("utf-8") for title in result.as_numpy(CATALOGUE_TITLES))
        return dict(zip(result.as_numpy(CATALOGUE_MOVIES).tolist(), titles))

    def _served_parameters(self) -> dict:
        """The ensemble config's parameters, as JSON (read from the server once)."""
        if self._parameters is None:
            if self.transport == "grpc":
                config = self._ask(lambda: self.client.get_model_config(ENSEMBLE_NAME, as_json=True))["config"]
            else:
                config = self._ask(lambda: self.client.get_model_config(ENSEMBLE_NAME))
            self._parameters = config.get("parameters", {})
        return self._parameters

    def _served_shapes(self) -> dict[str, list[int]]:
        """The ensemble's input and output shapes by name (read from the server once)."""
        if self._shapes is None:
            metadata = self._ask(lambda: self.client.get_model_metadata(ENSEMBLE_NAME))
            if isinstance(metadata, dict):  # HTTP answers JSON, gRPC a protobuf message
                tensors = metadata["inputs"] + metadata["outputs"]
                self._shapes = {tensor["name"]: [int(d) for d in tensor["shape"]] for tensor in tensors}
            else:
                tensors = list(metadata.inputs) + list(metadata.outputs)
                self._shapes = {tensor.name: [int(d) for d in tensor.shape] for tensor in tensors}
        return self._shapes

    def served_top_k(self) -> int:
        """How many movies the exported ensemble answers per session."""
        return self._served_shapes()[MOVIE_IDS][-1]

    def _batched(self) -> bool:
        """Whether the ensemble batches requests (its tensors then lead with a batch dimension)."""
        return len(self._served_shapes()[VALUES_INPUT]) == 2

    def served_exclude_seen(self) -> bool:
        """Whether the served ensemble leaves a session's own movies out (fixed at export)."""
        return decode_exclude_seen(self._served_parameters())

    def infer(self, sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids and scores for any number of sessions, in as many requests as the server's limits need."""
        answers = [self._infer_one(sessions[start:stop]) for start, stop in request_batches(sessions)]
        if len(answers) == 1:
            return answers[0]
        return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])

    def _infer_one(self, sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        values, offsets = encode_request(sessions, self._batched())
        inputs = [
            self.module.InferInput(VALUES_INPUT, list(values.shape), "INT64"),
            self.module.InferInput(OFFSETS_INPUT, list(offsets.shape), "INT32"),
        ]
        inputs[0].set_data_from_numpy(values)
        inputs[1].set_data_from_numpy(offsets)
        result = self._ask(lambda: self.client.infer(ENSEMBLE_NAME, inputs))
        movies, scores = result.as_numpy(MOVIE_IDS), result.as_numpy(SCORES)
        return movies.reshape(-1, movies.shape[-1]), scores.reshape(-1, scores.shape[-1])  # the batch row off

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
        catalogue = self._current_catalogue(movies[movies != NO_MOVIE])
        results = []
        for index, session in enumerate(sessions):
            known, unknown = split_session(session, catalogue.known)
            answered = movies[index, :top_k] != NO_MOVIE  # rows end early when seen movies leave fewer than k
            best = movies[index, :top_k][answered].tolist()
            results.append(
                Recommendation(
                    session_id=session_ids[index],
                    movies=best,
                    scores=[float(s) for s in scores[index, :top_k][answered]],
                    titles=[catalogue.title_of_movie.get(m, "") for m in best],
                    unknown_movies=unknown,
                    fallback=fallback_for(known),
                    exclude_seen=served,
                )
            )
        return results


def _run_catalogue(run_dir: str | Path) -> MovieCatalogue:
    """The run's movies: what a server exported from it knows (reading a run loads the model's libraries)."""
    from t4r_app.serve.run_movies import read_run_movies

    title_of_movie = read_run_movies(run_dir).title_of_movie()
    return MovieCatalogue(title_of_movie, set(title_of_movie))
