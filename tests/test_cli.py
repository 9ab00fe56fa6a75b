"""The t4r-app command line: generate -> preprocess, help texts, and error exits."""

from __future__ import annotations

import json
import subprocess
import sys

from t4r_app.cli import main


def test_generate_then_preprocess_a_zip(tmp_path, capsys):
    assert main(["generate", "--output", str(tmp_path / "raw"), "--users", "300", "--movies", "80", "--zip"]) == 0
    zip_path = tmp_path / "raw" / "recommandation.zip"
    assert zip_path.is_file()
    assert main(["preprocess", "--input", str(zip_path), "--output", str(tmp_path / "data"), "max_seq_length=20"]) == 0
    printed = capsys.readouterr().out
    assert "records" in printed and "train" in printed and "test" in printed
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    generation = json.loads((tmp_path / "raw" / "generation.json").read_text())
    assert stats["records_read"] == generation["records"] and stats["interactions_read"] == generation["interactions"]
    assert stats["splits"]["test"]["length"]["max"] <= 20
    assert "max_seq_length: 20" in (tmp_path / "data" / "config.yaml").read_text()


def test_bad_input_exits_with_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["preprocess", "--input", str(tmp_path / "missing.zip"), "--output", str(tmp_path / "d")]) == 1
    assert "missing.zip: no such file or directory" in capsys.readouterr().err
    assert main(["preprocess", "--input", "x", "--output", "y", "on_bad_recod=skip"]) == 2
    assert "did you mean preprocess.on_bad_record" in capsys.readouterr().err


def test_help_lists_commands_and_config_keys():
    top = subprocess.run([sys.executable, "-m", "t4r_app", "--help"], capture_output=True, text=True, check=True)
    assert "generate" in top.stdout and "preprocess" in top.stdout
    sub = subprocess.run([sys.executable, "-m", "t4r_app", "preprocess", "--help"], capture_output=True, text=True, check=True)
    assert "preprocess.on_bad_record (default 'fail')" in sub.stdout and "split.rule" in sub.stdout


def test_generate_rejects_impossible_sizes(tmp_path, capsys):
    assert main(["generate", "--output", str(tmp_path), "--users", "3", "--movies", "1"]) == 2
    assert "at least 1 user, 2 movies" in capsys.readouterr().err


def test_train_evaluate_predict_through_the_cli(tiny_data, tmp_path, capsys):
    from conftest import TINY_MODEL

    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--output", str(run_dir), "--quiet", *TINY_MODEL, "train.epochs=1"]) == 0
    assert "best validation NDCG@10" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(run_dir), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| BERT4Rec |" in printed and "| MostPopular |" in printed and "test (" in printed
    (tmp_path / "s.jsonl").write_text('{"session_id": "x", "movieIndices": [1, 2, 3]}\n')
    assert main(["predict", "--run", str(run_dir), "--input", str(tmp_path / "s.jsonl"), "--output", str(tmp_path / "p.jsonl")]) == 0
    assert json.loads((tmp_path / "p.jsonl").read_text())["session_id"] == "x"
    # the same run again is refused; --resume of a finished run has nothing left to do
    assert main(["train", "--data", str(tiny_data), "--output", str(run_dir), "--quiet"]) == 1
    assert "pass --resume" in capsys.readouterr().err


def test_train_help_lists_model_keys():
    text = subprocess.run([sys.executable, "-m", "t4r_app", "train", "--help"], capture_output=True, text=True, check=True).stdout
    assert "model.mask_probability (default 0.4)" in text and "--resume" in text and "train.patience" in text


def test_the_transport_flag_keeps_its_old_spelling():
    from t4r_app.cli import parse_arguments

    for flag in ("--transport", "--protocol"):  # --protocol: before the flag was renamed
        args = parse_arguments(["recommend", "--server", "localhost:8001", "--session", "1,2", flag, "http"])
        assert args.transport == "http"
