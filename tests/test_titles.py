"""Movies described by their titles: the encoder and its cache, the three modes, brand-new and withheld movies, serving."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run, shared, tiny_config
from themed_titles import COOKING_MOVIES, NEW_COOKING, NEW_SPACE, SPACE_MOVIES, write_themed_dataset

from t4r_app.cli import main
from t4r_app.config import load_config
from t4r_app.data.item_sequences import ItemSequences
from t4r_app.data.title_vectors import CACHE_FILE, TitleVectors, is_placeholder, load_title_vectors
from t4r_app.errors import ConfigError, RunError
from t4r_app.evaluate.baselines import TitlePopularity
from t4r_app.evaluate.protocol import evaluate_results, target_slices
from t4r_app.model.architecture import build_model, item_schema, vocabulary_size
from t4r_app.data.split_views import training_histories, withheld_movies
from t4r_app.model.saved_run import load_run, load_schema
from t4r_app.model.title_embedding import T4R_EMBEDDING_STD
from t4r_app.serve.export import export_run, load_exported, trace_model
from t4r_app.serve.recommender import Recommender
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import TritonServer, free_port
from t4r_app.train.trainer import train

WINDOW = 12


@pytest.fixture(scope="module")
def themed_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("themed")
    write_themed_dataset(root / "raw")
    run(root / "raw", root / "data", f"max_seq_length={WINDOW}")
    # The title-vector cache is written into DATA_DIR on first use: written here, so the shared
    # folder is whole before any test reads it.
    load_title_vectors(root / "data", vocabulary_size(load_schema(root / "data" / "train")), progress=False)
    return shared(root / "data")


def _train(data, run_dir, *overrides):
    train(tiny_config("train.min_epochs=0", *overrides), data, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def feature_run(themed_data, tmp_path_factory):
    """Title features, 10% of the watched movies withheld from training, trained for 10 epochs.

    One validation, after the last epoch: on this small set validation NDCG is noisy, and an
    early best checkpoint (epoch 4 in one run) has not yet placed new titles as far apart.
    """
    run_dir = tmp_path_factory.mktemp("feature") / "run"
    overrides = ["model.title_embeddings=feature", "train.withhold_movies=0.1", "train.epochs=10", "train.eval_every_epochs=10"]
    return shared(_train(themed_data, run_dir, *overrides))


def _item_ids(data_dir, movies):
    mapping = pd.read_parquet(data_dir / "item_mapping.parquet")
    item_of = dict(zip(mapping["movie_index"], mapping["item_id"]))
    return np.array([item_of[m] for m in movies])


def _mean_cosine(vectors, rows, columns):
    """Mean cosine similarity between the rows and the columns' vectors (the diagonal left out for one set)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    similarity = unit[rows] @ unit[columns].T
    if np.array_equal(rows, columns):
        return (similarity.sum() - len(rows)) / (len(rows) * (len(rows) - 1))
    return similarity.mean()


def test_placeholder_titles_are_recognised():
    for title in ["", "  ", "unknown", "Untitled", "N/A", "Movie 52", "movie #3", "123", "?", None]:
        assert is_placeholder(title), title
    for title in ["Heat (1995)", "187 (1997)", "8 1/2 (1963)", "Movie 43 (2013)", "Alien"]:
        assert not is_placeholder(title), title


def test_title_vectors_are_cached_and_only_changed_titles_encoded_again(themed_data, tmp_path):
    vocabulary = vocabulary_size(load_schema(themed_data / "train"))
    titles = load_title_vectors(themed_data, vocabulary, progress=False)
    space, cooking = _item_ids(themed_data, SPACE_MOVIES), _item_ids(themed_data, COOKING_MOVIES)
    assert titles.vectors.shape == (vocabulary, 384) and titles.has_title[space].all()
    assert np.allclose(np.linalg.norm(titles.vectors[space], axis=1), 1.0, atol=1e-5)
    assert not titles.has_title[:3].any() and not titles.vectors[:3].any()  # padding, null, OOV
    # A sentence encoder: films of one theme are closer to each other than to the other theme's.
    assert _mean_cosine(titles.vectors, space, space) > _mean_cosine(titles.vectors, space, cooking) + 0.1

    # A cached vector is read back, not encoded again: a marked one comes back marked (in a copy:
    # the shared data is never written, so a failure here cannot leak into other tests)...
    marked_dir, changed = tmp_path / "marked", tmp_path / "changed"
    for folder in (marked_dir, changed):
        folder.mkdir()
        for name in ("item_mapping.parquet", CACHE_FILE):
            (folder / name).write_bytes((themed_data / name).read_bytes())
    cache = dict(np.load(themed_data / CACHE_FILE))
    for folder in (marked_dir, changed):
        np.savez(folder / CACHE_FILE, **{**cache, "vectors": np.full_like(cache["vectors"], 0.5)})
    assert np.allclose(load_title_vectors(marked_dir, vocabulary, progress=False).vectors[space], 0.5)
    # ...and a changed title is encoded again, alone.
    mapping = pd.read_parquet(changed / "item_mapping.parquet")
    mapping.loc[mapping["item_id"] == space[0], "title"] = "A Documentary about Volcanoes"
    mapping.to_parquet(changed / "item_mapping.parquet")
    again = load_title_vectors(changed, vocabulary, progress=False)
    assert np.allclose(again.vectors[space[1:]], 0.5)
    assert np.isclose(np.linalg.norm(again.vectors[space[0]]), 1.0, atol=1e-5)
    assert np.array_equal(np.load(themed_data / CACHE_FILE)["vectors"], cache["vectors"])  # the shared cache untouched


def test_init_starts_the_item_table_from_the_titles(themed_data):
    schema = item_schema(load_schema(themed_data / "train"))
    # d_model 16: fewer columns than the 26 titles have principal components, so every column is a component
    config = tiny_config("model.title_embeddings=init", "model.d_model=16")
    from t4r_app.model.item_features import build_item_features

    features = build_item_features(config.model, themed_data, vocabulary_size(schema), training_histories(themed_data), False)
    weights = build_model(schema, config.model, features=features).heads[0].prediction_task_dict["next-item"].item_embedding_table.weight
    weights = weights.detach().numpy()
    space, cooking = _item_ids(themed_data, SPACE_MOVIES), _item_ids(themed_data, COOKING_MOVIES)
    titled = np.concatenate([space, cooking])
    assert weights[titled].std() == pytest.approx(T4R_EMBEDDING_STD, rel=0.05)
    assert _mean_cosine(weights, space, space) > _mean_cosine(weights, space, cooking) + 0.2
    # without titles the same rows are T4R's random start: no theme structure
    plain = build_model(schema, tiny_config("model.d_model=16").model).heads[0].prediction_task_dict["next-item"].item_embedding_table.weight
    plain = plain.detach().numpy()
    assert abs(_mean_cosine(plain, space, space) - _mean_cosine(plain, space, cooking)) < 0.1


def test_a_brand_new_movie_is_recommended_by_its_title(feature_run, themed_data):
    recommender = Recommender(load_run(feature_run))
    new_space, new_cooking = NEW_SPACE[0], NEW_COOKING[0]
    for session, same, other in ((SPACE_MOVIES[2:6], new_space, new_cooking), (COOKING_MOVIES[3:8], new_cooking, new_space)):
        answer = recommender.recommend([session], top_k=len(recommender.item_of_movie), exclude_seen=False)[0]
        theme = SPACE_MOVIES if same == new_space else COOKING_MOVIES
        # Never watched, yet it comes with its theme's films, before every film of the other theme...
        assert answer.movies.index(same) <= len(theme)
        assert answer.movies.index(same) < min(answer.movies.index(m) for m in set(SPACE_MOVIES + COOKING_MOVIES) - set(theme))
        # ...and far above the new title of the other theme (more than e^2 times as likely).
        assert answer.scores[answer.movies.index(same)] > np.exp(2) * answer.scores[answer.movies.index(other)]
    # A session may hold it too: it is part of the catalogue, not an unknown id.
    with_new = recommender.recommend([[SPACE_MOVIES[0], new_space]], top_k=5)[0]
    assert with_new.unknown_movies == [] and with_new.fallback is None


def test_recommend_finds_a_brand_new_movie_by_title(feature_run, capsys):
    assert main(["recommend", "--run", str(feature_run), "--titles", NEW_SPACE[1], "--json", "--top-k", "5"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["movieIndices"]) == 5 and "unknown_movies" not in answer
    assert set(answer["movieIndices"]) <= set(SPACE_MOVIES)  # a new space film's session continues in space


def test_withheld_movies_are_cold_for_training_and_evaluation(feature_run, themed_data):
    config = load_run(feature_run).config
    withheld = withheld_movies(themed_data, config.train.withhold_movies, config.seed)
    assert len(withheld) == round(0.1 * 24)
    assert not np.isin(training_histories(themed_data, withheld).values, withheld).any()
    assert np.isin(training_histories(themed_data).values, withheld).any()
    results = evaluate_results(feature_run, progress=False).to_json()  # eval.json's structure, not written into the shared run
    test = results["test"]
    assert set(test["baselines"]) == {"most_popular", "markov", "title_popularity"}
    counts = np.bincount(training_histories(themed_data, withheld).values, minlength=len(load_run(feature_run).features.trained))
    from t4r_app.data.item_sequences import read_split

    targets = read_split(themed_data, "test").items.split_last()[1]
    assert test["slices"]["cold"]["rows"] == int((counts[targets] == 0).sum()) > 0
    assert set(test["slices"]["cold"]) == {"rows", "model", "most_popular", "markov", "title_popularity"}
    assert test["slices"]["cold"]["most_popular"]["full"]["hr@10"] == 0.0  # never trained: popularity cannot name them
    # among the untrained movies alone (the withheld ones and the two never watched), ties still count against
    assert test["slices"]["cold"]["most_popular"]["among_cold"]["hr@1"] == 0.0
    assert "among_cold" in test["slices"]["cold"]["model"] and "among_cold" not in test["slices"]["rare"].get("model", {})
    assert "among_cold" not in test["model"]


def test_off_leaves_titles_only_movies_out_of_the_catalogue(themed_data, tmp_path):
    recommender = Recommender(load_run(_train(themed_data, tmp_path / "off", "train.epochs=2")))
    answer = recommender.recommend([[SPACE_MOVIES[0], NEW_SPACE[0]]], top_k=100)[0]
    assert answer.unknown_movies == [NEW_SPACE[0]]
    assert NEW_SPACE[0] not in answer.movies and NEW_COOKING[0] not in answer.movies
    assert len(answer.movies) == len(SPACE_MOVIES + COOKING_MOVIES) - 1  # every watched film but the session's


@pytest.mark.slow  # tritonserver
def test_export_carries_projected_titles_and_triton_answers_like_predict(feature_run, tmp_path):
    repository = export_run(feature_run, tmp_path / "repo", target="cpu", top_k=5)
    run = load_run(feature_run)
    traced = trace_model(run.model, run.session_length)
    shapes = [tuple(tensor.shape) for _, tensor in [*traced.named_parameters(), *traced.named_buffers()]]
    assert (len(run.features.trained), run.config.model.d_model) in shapes  # the projected title matrix
    assert not any(384 in shape for shape in shapes)  # no 384-d title vectors, no projection to apply, no encoder
    sessions = [SPACE_MOVIES[:4], [NEW_SPACE[0], SPACE_MOVIES[1]], [NEW_COOKING[0]], COOKING_MOVIES[2:9], []]
    expected = Recommender(run).recommend(sessions, top_k=5)
    ensemble = load_exported(repository)
    request = pd.DataFrame({"movieIndices": [np.array(s, dtype=np.int64) for s in sessions]})
    in_process = ensemble.transform(request)
    assert np.array_equal(np.stack(in_process["movie_ids"].to_numpy()), np.array([e.movies for e in expected]))
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        client = TritonRecommender(server.http_url, feature_run)
        try:
            answers = client.recommend(sessions, top_k=5)
        finally:
            client.close()
    for got, want in zip(answers, expected):
        assert got.movies == want.movies and np.allclose(got.scores, want.scores, atol=1e-4)


def test_sasrec_takes_title_features_too(themed_data, tmp_path):
    run_dir = _train(themed_data, tmp_path / "sasrec", "model.architecture=sasrec", "model.title_embeddings=feature", "train.epochs=2")
    answer = Recommender(load_run(run_dir)).recommend([SPACE_MOVIES[:3]], top_k=30)[0]
    assert NEW_SPACE[0] in answer.movies and NEW_COOKING[0] in answer.movies


def test_title_popularity_gives_a_cold_movie_its_title_neighbours_popularity():
    vectors = np.zeros((8, 3), dtype=np.float32)
    vectors[3:] = [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0.95, 0.05, 0]]
    vectors[3:] /= np.linalg.norm(vectors[3:], axis=1, keepdims=True)
    has_title = np.arange(8) >= 3
    train_rows = ItemSequences.from_lists([[3, 3, 3, 3, 4, 4, 5], [6]])  # item 7 never trained
    baseline = TitlePopularity(train_rows, 8, TitleVectors(vectors, has_title), neighbours=2)
    # item 7's title is closest to items 3 and 4 (counts 4 and 2 of a maximum of 4)
    assert baseline.scores[7] == pytest.approx((1.0 + 0.5) / 2)
    assert baseline.scores[3] == 1.0 and baseline.scores[6] == 0.25
    assert target_slices(np.array([3, 6, 7]), np.bincount(train_rows.values, minlength=8).astype(float))["cold"].tolist() == [
        False,
        False,
        True,
    ]


def test_title_settings_are_checked():
    assert load_config(None, ["model.title_embeddings=off"]).model.title_embeddings == "off"
    # titles score the sampled negatives too, so title features and a sampled loss go together
    assert load_config(None, ["model.title_embeddings=feature", "model.sampled_softmax=50"]).model.sampled_softmax == 50
    with pytest.raises(ConfigError, match="'init', 'feature'"):
        load_config(None, ["model.title_embeddings=both"])


def test_title_modes_need_titles(tmp_path):
    from conftest import session, write_shard

    write_shard(tmp_path / "raw" / "dataset" / "data-0.tfrecord", [session(u, [1, 2, 3, 4, 5, 6], list(range(6))) for u in range(20)])
    run(tmp_path / "raw", tmp_path / "data")
    with pytest.raises(RunError, match="has no movie titles"):
        _train(tmp_path / "data", tmp_path / "run", "model.title_embeddings=init", "train.epochs=1")
