"""The ETL end to end on a hand-written fixture: exact sequences, splits, reconciliation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import decoded, read_split, run, session, write_shard, write_titles
from merlin.schema import Tags

import nvtabular as nvt
from t4r_app.config import load_config
from t4r_app.data.item_sequences import ItemSequences, measured_repeats, repeat_stats, resolve_exclude_seen
from t4r_app.data.preprocess import format_summary, preprocess
from t4r_app.data.preprocess_stats import (
    ItemIds,
    LengthSummary,
    PreprocessStats,
    RepeatStats,
    SplitRuleStats,
    SplitStats,
    load_preprocess_stats,
)

USER_7 = [10, 14, 11, 12, 13, 15]
USER_3 = [30, 31, 32, 33, 34, 35]


def test_sequences_are_time_ordered_with_ties_in_reading_order(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    run(fixture_dataset, out)
    assert decoded(out, "sequences") == {3: USER_3, 7: USER_7}
    times = read_split(out, "sequences").set_index("user_index")["timestamp-list"]
    assert times[7] == [100, 150, 200, 300, 300, 400]
    assert times[3] == [50, 60, 60, 60, 70, 80]


def test_leave_one_out_holds_out_last_two_items(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    run(fixture_dataset, out)
    train, valid, test = (decoded(out, role) for role in ("train", "valid", "test"))
    for user, full in ((3, USER_3), (7, USER_7)):
        assert train[user] == full[:-2]
        assert valid[user] == full[:-1]  # input full[:-2], target full[-2]
        assert test[user] == full  # input full[:-1], target full[-1]
        # The targets' positions never reach the input of their own example.
        assert len(train[user]) == len(full) - 2 and len(valid[user]) - 1 == len(full) - 2


def test_truncation_keeps_most_recent_items(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    run(fixture_dataset, out, "max_seq_length=3")
    assert decoded(out, "test")[7] == USER_7[-3:]
    assert decoded(out, "valid")[7] == USER_7[-4:-1]
    assert decoded(out, "train")[7] == USER_7[-5:-2]


def test_temporal_split_uses_global_cutoffs(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    result = run(fixture_dataset, out, "split.rule=temporal", "split.valid_cutoff=150", "split.test_cutoff=300")
    train, valid, test = (decoded(out, role) for role in ("train", "valid", "test"))
    # user 7: 10@100 14@150 11@200 12@300 13@300 15@400; user 3: all before 150.
    assert train == {3: USER_3}  # user 7 has one item before 150: too short to train on
    assert valid == {7: [10, 14]}  # input [10] (before 150), target 14 (first at/after 150, before 300)
    assert test == {7: [10, 14, 11, 12]}  # input before 300, target 12, the first at 300 in reading order
    assert result.stats.split == SplitRuleStats(rule="temporal", valid_cutoff=150, test_cutoff=300)


def test_temporal_targets_come_after_their_inputs_on_generated_data(generated_small, tmp_path):
    out = tmp_path / "out"
    result = run(generated_small, out, "split.rule=temporal")
    valid_cut, test_cut = result.stats.split.valid_cutoff, result.stats.split.test_cutoff
    for role, cutoff in (("valid", valid_cut), ("test", test_cut)):
        frame = read_split(out, role)
        assert len(frame) > 0
        for times in frame["timestamp-list"]:
            assert times[-1] >= cutoff and all(t < cutoff for t in times[:-1])
    for times in read_split(out, "train")["timestamp-list"]:
        assert max(times) < valid_cut


def test_sequence_by_record_keeps_sessions_apart(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    run(fixture_dataset, out, "sequence_by=record", "min_sequence_length=3")
    sessions = read_split(out, "sequences")
    assert sorted(sessions["user_index"].tolist()) == [3, 3, 7, 7, 7]
    by_session = decoded(out, "sequences")
    # Records in reading order: data-0 #0, #1, data-2 #0, data-10 #0, #1 (natural shard order).
    assert by_session == {0: [12, 13], 1: [30, 31, 32], 2: [10, 14, 11], 3: [33, 34, 35], 4: [15]}


def test_consecutive_duplicates_are_dropped_and_counted(tmp_path):
    root = tmp_path / "raw"
    write_shard(root / "dataset" / "data-0.tfrecord", [session(1, [5, 5, 6, 6, 6, 7, 5, 8, 9], list(range(9)))])
    write_titles(root / "movie_title_by_index.json", range(10))
    out = tmp_path / "out"
    result = run(root, out, "drop_consecutive_duplicates=true")
    assert decoded(out, "sequences") == {1: [5, 6, 7, 5, 8, 9]}
    assert read_split(out, "sequences")["timestamp-list"][0] == [0, 2, 5, 6, 7, 8]
    assert result.stats.kept.interactions_dropped.consecutive_duplicates == 3
    assert result.stats.kept.interactions == 6


def test_counts_reconcile_from_records_to_sequences(fixture_dataset, tmp_path):
    write_shard(fixture_dataset / "recommendation" / "dataset" / "data-3.tfrecord",
                [session(9, [10, 11], [1, 2]), session(11, [12], [3])])
    out = tmp_path / "out"
    stats = run(fixture_dataset, out).stats
    read, kept = stats.read, stats.kept
    assert read.records_read == read.records_kept + sum(read.records_rejected.values()) == 7
    dropped = kept.interactions_dropped
    assert read.interactions == kept.interactions + dropped.consecutive_duplicates + dropped.short_sequences
    assert kept.interactions == 12 and dropped.short_sequences == 3
    assert kept.users == 2 and kept.sequences == 2 and kept.sequences_dropped_short == 2
    assert kept.sequences_one_interaction == 1  # user 11: nothing to predict from
    # User 9's two items are too short to train on, but its test example counts: input [10], target 11.
    assert stats.splits["test"] == SplitStats(sequences=3, interactions=14, length=LengthSummary(min=2, median=6.0, max=6))
    assert "train" in stats.splits and stats.splits["train"].sequences == 2
    assert json.loads((out / "stats.json").read_text())["records_read"] == 7
    assert load_preprocess_stats(out) == stats


def test_stats_json_keeps_its_keys_and_reads_back():
    """stats.json is read by train and by people's scripts: the typed stats write exactly its keys."""
    saved = {
        "input": "directory raw",
        "shards_read": 2,
        "shards_rejected": {"empty_shard": 1},
        "records_read": 6,
        "records_kept": 5,
        "records_rejected": {"bad_timestamp": 1},
        "interactions_read": 14,
        "interactions_dropped": {"consecutive_duplicates": 0, "short_sequences": 2},
        "interactions": 12,
        "repeats": {"interactions": 0, "share": 0.0},
        "sequences": 2,
        "sequences_dropped_short": 1,
        "sequences_one_interaction": 0,
        "users": 2,
        "items": 30,
        "item_ids": {"padding": 0, "null": 1, "out_of_vocabulary": 2, "first_movie": 3, "last_movie": 32, "mask": 33},
        "split": {"rule": "leave_one_out", "valid_cutoff": None, "test_cutoff": None},
        "splits": {"train": {"sequences": 2, "interactions": 8, "length": {"min": 4, "median": 4.0, "max": 4}}},
        "items_titles_only": 18,
        "timings_s": {"total": 1.5},
    }
    stats = PreprocessStats.from_json(saved)
    assert stats.read.records_rejected == {"bad_timestamp": 1} and stats.item_ids == ItemIds.for_movies(30)
    assert json.dumps(stats.to_json()) == json.dumps(saved)  # same keys, same order, same values
    # stats.json written before the split rule was renamed: its key was "protocol".
    older = {**saved, "split": {"protocol": "temporal", "valid_cutoff": 10, "test_cutoff": 20}}
    assert PreprocessStats.from_json(older).split == SplitRuleStats(rule="temporal", valid_cutoff=10, test_cutoff=20)


def test_encoding_reserves_padding_and_mask_and_maps_back_to_titles(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    stats = run(fixture_dataset, out).stats
    mapping = pd.read_parquet(out / "item_mapping.parquet")
    watched = mapping[mapping["interactions"] > 0]
    assert sorted(watched["movie_index"]) == sorted(USER_3 + USER_7)
    assert mapping["item_id"].min() == 3 and mapping["item_id"].max() == 3 + len(mapping) - 1
    assert (mapping["title"] == mapping["movie_index"].map(lambda m: f"Movie {m} (1999)")).all()
    # Titled movies in no record (16..29, 36..39 of the titles 10..39) follow the watched ones.
    titles_only = mapping[mapping["interactions"] == 0]
    assert sorted(titles_only["movie_index"]) == [m for m in range(10, 40) if m not in USER_3 + USER_7]
    assert watched["item_id"].max() == 14 and titles_only["item_id"].min() == 15
    assert stats.items_titles_only == 18
    assert stats.item_ids == ItemIds(padding=0, null=1, out_of_vocabulary=2, first_movie=3, last_movie=32, mask=33)
    schema = nvt.Dataset(str(out / "train" / "*.parquet"), engine="parquet", cpu=True).schema
    item = schema["item_id-list"]
    assert {Tags.ITEM, Tags.ID, Tags.CATEGORICAL, Tags.LIST} <= set(item.tags)
    assert item.int_domain.max == stats.item_ids.mask
    assert item.properties["mask_id"] == 33
    assert item.value_count.max == load_config().preprocess.max_seq_length  # the default window
    assert Tags.USER in schema["user_index"].tags
    ids = np.concatenate(read_split(out, "train")["item_id-list"].map(np.array).tolist())
    assert ids.min() >= 3 and ids.max() <= 14


def test_placeholder_titles_do_not_join_the_catalogue(fixture_dataset, tmp_path):
    titles = fixture_dataset / "recommendation" / "movie_title_by_index.json"
    named = {str(m): f"Movie {m} (1999)" for m in USER_3 + USER_7}
    titles.write_text(json.dumps({**named, "50": "unknown", "51": "", "52": "Movie 52", "53": "Heat (1995)"}))
    stats = run(fixture_dataset, tmp_path / "out").stats
    mapping = pd.read_parquet(tmp_path / "out" / "item_mapping.parquet")
    assert stats.items_titles_only == 1
    assert mapping.loc[mapping["interactions"] == 0, "movie_index"].tolist() == [53]


def test_saved_workflow_reloads_and_encodes_new_interactions(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    run(fixture_dataset, out)
    workflow = nvt.Workflow.load(str(out / "workflow"))
    frame = pd.DataFrame(
        {"user_index": [1, 1], "session_index": [0, 0], "movie_index": [10, 999], "timestamp": [5, 6], "event_order": [0, 1]}
    )
    result = workflow.transform(nvt.Dataset(frame, cpu=True)).to_ddf().compute()
    item_of_movie = pd.read_parquet(out / "item_mapping.parquet").set_index("movie_index")["item_id"]
    assert list(result["item_id-list"][0]) == [item_of_movie[10], 2]  # an unseen movie encodes as out-of-vocabulary
    frame["movie_index"] = [10, 20]  # 20 is only in the titles file: it has an id all the same
    result = workflow.transform(nvt.Dataset(frame, cpu=True)).to_ddf().compute()
    assert list(result["item_id-list"][0]) == [item_of_movie[10], item_of_movie[20]]
    assert item_of_movie[20] >= 15


def test_rerun_into_the_same_folder_replaces_outputs(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    run(fixture_dataset, out)
    run(fixture_dataset, out, "max_seq_length=3")
    assert decoded(out, "test")[7] == USER_7[-3:]
    assert len(list((out / "test").glob("*.parquet"))) == 1


@pytest.fixture(scope="module")
def generated_small(tmp_path_factory):
    from t4r_app.input_layout.synthetic import GenerationSpec, generate_dataset

    folder = tmp_path_factory.mktemp("generated")
    generate_dataset(GenerationSpec(users=400, movies=120, seed=3), folder, make_zip=True)
    return folder / "recommandation.zip"


def test_generated_zip_reads_back_and_reconciles(generated_small, tmp_path):
    generation = json.loads((generated_small.parent / "generation.json").read_text())
    stats = run(generated_small, tmp_path / "out").stats
    assert stats.read.records_read == stats.read.records_kept == generation["records"]
    assert stats.read.interactions == generation["interactions"]
    assert stats.read.shards_read == 4 and stats.items <= 120


def test_repeats_are_flagged_from_the_second_occurrence_on():
    sequences = ItemSequences.from_lists([[5, 6, 5, 7, 6, 5], [8, 9], [], [5, 5]])
    assert sequences.repeated().tolist() == [False, False, True, False, True, True, False, False, False, True]
    assert repeat_stats(sequences) == RepeatStats(interactions=4, share=0.4)
    assert repeat_stats(sequences, np.array([False, True, True, True])) == RepeatStats(interactions=1, share=0.25)


def test_preprocess_measures_repeats_and_auto_keeps_seen_movies_when_they_come_back(tmp_path):
    root = tmp_path / "raw"
    records = [
        session(1, [5, 6, 5, 7, 6, 5], list(range(6))),  # 3 repeats
        session(2, [8, 9, 10, 11, 12], list(range(5))),
        session(3, [20, 20, 21], [0, 1, 2]),  # too short: left out, its repeat too
    ]
    write_shard(root / "dataset" / "data-0.tfrecord", records)
    write_titles(root / "movie_title_by_index.json", range(30))
    out = tmp_path / "out"
    stats = run(root, out).stats
    assert stats.kept.interactions == 11 and stats.kept.repeats == RepeatStats(interactions=3, share=3 / 11)
    assert "repeats         3 interactions (27.27%) repeat a movie earlier in their sequence" in format_summary(stats)
    exclude, reason = resolve_exclude_seen(load_config(), out)
    assert not exclude and "27.27% of interactions repeat" in reason and "seen movies are kept" in reason
    assert resolve_exclude_seen(load_config(None, ["serve.exclude_seen=true"]), out)[0] is True
    # a DATA_DIR from before the measurement: measured from sequences/ alike
    saved = json.loads((out / "stats.json").read_text())
    del saved["repeats"]
    (out / "stats.json").write_text(json.dumps(saved))
    assert measured_repeats(out) == RepeatStats(interactions=3, share=3 / 11)


def test_auto_leaves_seen_movies_out_when_nobody_watches_a_movie_twice(fixture_dataset, tmp_path):
    out = tmp_path / "out"
    assert run(fixture_dataset, out).stats.kept.repeats == RepeatStats(interactions=0, share=0.0)
    exclude, reason = resolve_exclude_seen(load_config(), out)
    assert exclude and reason == (
        "serve.exclude_seen=auto: 0.00% of interactions repeat a movie earlier in their sequence, "
        "below 1%, so seen movies are left out"
    )
    assert resolve_exclude_seen(load_config(None, ["serve.exclude_seen=false"]), out) == (
        False, "serve.exclude_seen=false in the config (0.00% of interactions repeat a movie earlier in their sequence)"
    )


def test_vocabulary_from_keeps_every_old_id_and_appends_new_movies(fixture_dataset, tmp_path):
    day1 = tmp_path / "day1"
    run(fixture_dataset, day1)
    # Day 2: a new user watches a new movie 40 (and old ones) often enough to outrank the old
    # movies, which without the old vocabulary would move their ids.
    write_shard(fixture_dataset / "recommendation" / "dataset" / "data-3.tfrecord",
                [session(9, [40, 40, 40, 41, 40, 13, 40], [1, 2, 3, 4, 5, 6, 7])])
    write_titles(fixture_dataset / "recommendation" / "movie_title_by_index.json", range(50))
    day2 = tmp_path / "day2"
    stats = preprocess(load_config(None, []), str(fixture_dataset), day2, vocabulary_from=day1).stats
    old = pd.read_parquet(day1 / "item_mapping.parquet").set_index("movie_index")["item_id"]
    new = pd.read_parquet(day2 / "item_mapping.parquet").set_index("movie_index")["item_id"]
    assert (new[old.index] == old).all()  # every old movie at its old id
    appended = new.drop(old.index)
    assert appended.min() == old.max() + 1 and {40, 41} <= set(appended.index)
    assert stats.items_new == len(appended) and json.loads((day2 / "stats.json").read_text())["items_new"] == len(appended)
    # The saved workflow encodes with those ids: day 2's sequences hold 40 at its new id.
    assert decoded(day2, "sequences")[9] == [40, 40, 40, 41, 40, 13, 40]
    refit = run(fixture_dataset, tmp_path / "refit").stats
    assert refit.items_new is None
    assert pd.read_parquet(tmp_path / "refit" / "item_mapping.parquet").set_index("movie_index")["item_id"][40] == 3  # by popularity
