"""The typed config: YAML, overrides, and errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from t4r_app.config import AppConfig, load_config, save_config
from t4r_app.errors import ConfigError


def test_defaults_and_shipped_yaml_agree():
    assert load_config("configs/default.yaml") == AppConfig()


def test_overrides_by_path_and_by_unique_name(tmp_path):
    config = load_config(None, ["split.rule=temporal", "on_bad_record=skip", "max_seq_length=50", "split.valid_cutoff=10", "split.test_cutoff=20"])
    assert config.split.rule == "temporal" and config.split.valid_cutoff == 10
    assert config.preprocess.on_bad_record == "skip" and config.preprocess.max_seq_length == 50


def test_sasrec_takes_the_masking_keys_at_their_defaults():
    assert load_config(None, ["model.architecture=sasrec"]).model.mask_probability == 0.4  # untouched: accepted


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preprocess:\n  max_seq_length: 30\n  sequence_by: record\n")
    config = load_config(path, ["max_seq_length=40"])
    assert config.preprocess.max_seq_length == 40 and config.preprocess.sequence_by == "record"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["on_bad_recod=skip"], "unknown config key 'on_bad_recod'; did you mean preprocess.on_bad_record"),
        (["on_bad_record=maybe"], "preprocess.on_bad_record: 'maybe' is not one of 'fail', 'skip'"),
        (["max_seq_length=long"], "preprocess.max_seq_length: expected an integer, got 'long'"),
        (["max_seq_length=1"], "preprocess.max_seq_length: 1 is below the minimum 2"),
        (["split.valid_quantile=0.95"], "valid_quantile must be below split.test_quantile"),
        (["drop_consecutive_duplicates=3"], "expected true or false"),
        (["max_seq_length"], "must look like key.sub=value"),
        (["model.architecture=sasrec", "model.mask_probability=0.2", "model.masking=exact"],
         "model.mask_probability=0.2, model.masking='exact': masking applies to model.architecture=bert4rec only"),
        (["model.architecture=sasrec", "model.last_item_mask_share=0.5"], "sasrec trains on every next item"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


def test_unknown_yaml_key_is_reported_with_its_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  rul: temporal\n")
    with pytest.raises(ConfigError, match=r"unknown key 'split.rul' \(did you mean 'rule'\?\)"):
        load_config(path)


def test_the_split_rule_under_its_old_name_still_loads_with_a_warning(tmp_path):
    """Every config.yaml saved before the rename says split.protocol; old command lines too."""
    path = tmp_path / "old.yaml"
    path.write_text("split:\n  protocol: temporal\n")
    with pytest.warns(FutureWarning, match="split.protocol is now split.rule"):
        assert load_config(path).split.rule == "temporal"
    for override in ("split.protocol=temporal", "protocol=temporal"):
        with pytest.warns(FutureWarning, match="split.protocol is now split.rule"):
            assert load_config(None, [override]).split.rule == "temporal"
    path.write_text("split:\n  protocol: temporal\n  rule: leave_one_out\n")
    with pytest.raises(ConfigError, match="split.protocol and split.rule are the same setting"):
        load_config(path)


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_loads_back_to_the_same_values(tmp_path):
    config = load_config(None, ["split.rule=temporal", "dask.n_workers=2"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["dask"]["n_workers"] == 2
