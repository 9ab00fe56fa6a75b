"""The daily update's first two steps: stable item ids across fits and a model started from yesterday's."""

from __future__ import annotations


import pytest
import torch
from conftest import NEW_MOVIES, tiny_config

from t4r_app.config import load_config
from t4r_app.data.item_sequences import read_split
from t4r_app.data.preprocess import preprocess
from t4r_app.evaluate.protocol import evaluate_results
from t4r_app.errors import TrainingError
from t4r_app.model.architecture import build_model, item_schema, vocabulary_size
from t4r_app.model.saved_run import load_run, load_schema, read_run_info
from t4r_app.model.warm_start import warm_start
from t4r_app.serve.update_check import compare_update
from t4r_app.train.trainer import train

TABLE = "heads.0.prediction_task_dict.next-item.item_embedding_table.weight"


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


def test_train_init_from_records_its_parent_and_refuses_what_does_not_fit(tiny_run, day2_raw, day2_data, day2_run, tmp_path):
    assert read_run_info(day2_run).parent_run == str(tiny_run.resolve())
    with pytest.raises(TrainingError, match=r"model.d_model: 32 there, 48 here"):
        train(tiny_config("train.epochs=1", "model.d_model=48"), day2_data, tmp_path / "wider", progress=False,
              init_from=tiny_run)
    # Refitted without the old vocabulary, the popular new movie takes the first id and moves the others.
    refit = preprocess(load_config(None, ["max_seq_length=20"]), str(day2_raw), tmp_path / "refit").output_dir
    with pytest.raises(TrainingError, match="--vocabulary-from"):
        train(tiny_config("train.epochs=1"), refit, tmp_path / "refit-run", progress=False, init_from=tiny_run)


def test_an_update_is_judged_on_the_users_who_came_back_and_on_its_new_movies(tiny_run, tiny_data, day2_data, day2_run):
    quality = compare_update(tiny_run, day2_run, tiny_data, day2_data)
    # Only the 60 new users' test rows are new; each one's target is the new movie 1001, which
    # the served (old) model cannot name.
    assert (quality.newest_rows, quality.new_movie_targets) == (60, 60)
    assert quality.test_rows == 60 + len(read_split(tiny_data, "test").users)
    assert quality.old_hr_new_movies == 0.0 and quality.old_hr == 0.0
    assert 0.0 <= quality.new_ndcg <= quality.new_hr <= 1.0
    # evaluate reports those targets as a slice of their own, for the model and every baseline.
    results = evaluate_results(day2_run, splits=("test",), progress=False)
    new = results.splits["test"].slices["new"]
    assert new.rows == 60 and {"model", "most_popular", "markov"} <= set(new.scorers)
    assert "new" not in evaluate_results(tiny_run, splits=("test",), progress=False).splits["test"].slices


def test_evaluate_against_prints_the_served_and_the_updated_model_side_by_side(tiny_run, day2_run, tmp_path, capsys):
    import shutil

    from t4r_app.cli import main

    run_copy = shutil.copytree(day2_run, tmp_path / "run")  # evaluate writes eval.json into the run
    assert main(["evaluate", "--run", str(run_copy), "--against", str(tiny_run), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "new movies (since the kept vocabulary): 60" in printed  # evaluate's own slice
    assert f"against {tiny_run} (before the update):" in printed
    assert "newest sessions  60 of" in printed and "(60 of them to a new movie)" in printed
    assert "served model     HR@10 0.0000" in printed
