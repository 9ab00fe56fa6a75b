"""The daily update's first two steps: stable item ids across fits and a model started from yesterday's."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import session, tiny_config, write_shard

from t4r_app.config import load_config
from t4r_app.data.preprocess import preprocess
from t4r_app.errors import TrainingError
from t4r_app.model.architecture import build_model, item_schema, vocabulary_size
from t4r_app.model.saved_run import load_run, load_schema, read_run_info
from t4r_app.model.warm_start import warm_start
from t4r_app.train.trainer import train

NEW_MOVIES = [1000, 1001, 1002]
TABLE = "heads.0.prediction_task_dict.next-item.item_embedding_table.weight"


@pytest.fixture(scope="module")
def day2_raw(tiny_data, tmp_path_factory):
    """tiny_data's records plus a day of sessions that watch three new movies, most of all 1000."""
    raw = tmp_path_factory.mktemp("day2") / "raw"
    shutil.copytree(tiny_data.parent / "raw", raw)
    records = [session(5000 + user, [1000, 1001, 1000, 1002, 1000, 3], [10**9 + i for i in range(6)]) for user in range(60)]
    write_shard(raw / "recommendation" / "dataset" / "data-4.tfrecord", records)
    titles_path = raw / "recommendation" / "movie_title_by_index.json"
    titles = json.loads(titles_path.read_text())
    titles.update({str(movie): f"A New Movie {movie} (2026)" for movie in NEW_MOVIES})
    titles_path.write_text(json.dumps(titles))
    return raw


@pytest.fixture(scope="module")
def day2_data(day2_raw, tiny_data, tmp_path_factory):
    return preprocess(load_config(None, ["max_seq_length=20"]), str(day2_raw), tmp_path_factory.mktemp("day2") / "data",
                      vocabulary_from=tiny_data).output_dir


def test_the_old_weights_keep_their_ids_and_new_movies_start_at_the_mean(tiny_run, tiny_data, day2_data):
    old = load_run(tiny_run)
    old_vocabulary, schema = vocabulary_size(old.schema), item_schema(load_schema(day2_data / "train"))
    new_vocabulary = vocabulary_size(schema)
    assert new_vocabulary == old_vocabulary + len(NEW_MOVIES)
    model = build_model(schema, old.config.model)
    done = warm_start(model, old.model.state_dict(), old_vocabulary, new_vocabulary, "off")
    assert done["new_item_ids"] == 3 and done["grown_by_item_id"] >= 1
    before, after = old.model.state_dict()[TABLE], model.state_dict()[TABLE]
    assert torch.equal(after[: old_vocabulary - 1], before[: old_vocabulary - 1])  # every old id, same row
    assert torch.equal(after[-1], before[-1])  # [MASK] moved to the new last id
    assert torch.allclose(after[old_vocabulary - 1 : -1], before[3:-1].mean(dim=0).expand(3, -1))
    for name, value in old.model.state_dict().items():  # everything not indexed by item id: the same
        if value.shape == model.state_dict()[name].shape:
            assert torch.equal(model.state_dict()[name], value), name


def test_train_init_from_records_its_parent_and_refuses_what_does_not_fit(tiny_run, day2_raw, day2_data, tmp_path):
    run_dir = tmp_path / "day2-run"
    train(tiny_config("train.epochs=1"), day2_data, run_dir, progress=False, init_from=tiny_run)
    assert read_run_info(run_dir).parent_run == str(tiny_run.resolve())
    with pytest.raises(TrainingError, match=r"model.d_model: 32 there, 48 here"):
        train(tiny_config("train.epochs=1", "model.d_model=48"), day2_data, tmp_path / "wider", progress=False,
              init_from=tiny_run)
    # Refitted without the old vocabulary, the popular new movie takes the first id and moves the others.
    refit = preprocess(load_config(None, ["max_seq_length=20"]), str(day2_raw), tmp_path / "refit").output_dir
    with pytest.raises(TrainingError, match="--vocabulary-from"):
        train(tiny_config("train.epochs=1"), refit, tmp_path / "refit-run", progress=False, init_from=tiny_run)
