"""The guard that keeps shared fixtures as they were made: a test that writes into one fails."""

from __future__ import annotations

from conftest import _SHARED, changed_shared_folders, shared


def test_a_write_into_a_shared_folder_is_caught_and_blamed_once(tmp_path):
    folder = tmp_path / "shared_run"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"model")
    shared(folder)
    try:
        assert folder not in changed_shared_folders()  # reading is fine
        (folder / "eval.json").write_text("{}")  # what evaluate would write into a run
        assert changed_shared_folders() == [folder]
        assert changed_shared_folders() == []  # the next test is not blamed for it
        (folder / "weights.pt").write_bytes(b"other model")  # rewritten in place, same name
        assert changed_shared_folders() == [folder]
    finally:
        del _SHARED[folder]
