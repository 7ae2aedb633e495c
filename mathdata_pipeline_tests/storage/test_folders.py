"""Whole-folder replacement: atomic exchange where Linux offers it, rename-aside elsewhere."""

from __future__ import annotations

import pytest

from mathdata_pipeline.storage import folders
from mathdata_pipeline.storage.folders import replaced_folder


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_folder_is_replaced_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(folders, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    with replaced_folder(target) as staging:
        (staging / "old.txt").write_text("old")
    with replaced_folder(target) as staging:
        assert (target / "old.txt").exists()  # readers still see the old folder while the new one is written
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_exception_keeps_the_old_folder_and_removes_the_staging_one(tmp_path):
    target = tmp_path / "out"
    with replaced_folder(target) as staging:
        (staging / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replaced_folder(target) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("writer failed")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
