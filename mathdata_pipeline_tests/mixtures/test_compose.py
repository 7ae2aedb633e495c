"""Mixture exports: written whole into a temporary folder and swapped in, manifest last, so a
reader sees the old export or the new one and never a mix; extra files (the dataset card) ride along."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mathdata_pipeline.mixtures import compose
from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA, export


def _mixture(rows: int) -> tuple[pa.Table, dict]:
    table = pa.Table.from_pylist(
        [
            {
                "row_id": f"mx-{i}",
                "mixture": "m",
                "kind": "reasoning",
                "source": "gsm8k",
                "origin": "seed",
                "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
                "config_hash": "h",
            }
            for i in range(rows)
        ],
        schema=MIXTURE_SCHEMA,
    )
    return table, {"mixture": "m", "rows": rows}


def _export_state(folder) -> tuple[int, int, int]:
    """(manifest rows, JSONL lines, datasets rows) of an export folder."""
    import datasets

    manifest = json.loads((folder / "manifest.json").read_text())["rows"]
    lines = len((folder / "mixture.jsonl").read_text().splitlines())
    return manifest, lines, len(datasets.load_from_disk(str(folder / "hf_dataset")))


def test_a_failed_export_leaves_the_previous_export_whole(tmp_path, monkeypatch):
    import datasets

    folder = tmp_path / "mixture" / "m_export"
    export(*_mixture(3), folder)
    assert _export_state(folder) == (3, 3, 3)

    def dies_midway(self, path, **kwargs):  # fault injection: the process dies while saving the dataset
        raise KeyboardInterrupt("killed while writing hf_dataset")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        export(*_mixture(5), folder)
    monkeypatch.undo()
    assert _export_state(folder) == (3, 3, 3), "the export mixes the old and the new mixture"
    assert sorted(p.name for p in folder.iterdir()) == ["hf_dataset", "manifest.json", "mixture.jsonl"]


def test_next_export_replaces_everything_and_clears_what_a_killed_export_left(tmp_path):
    folder = tmp_path / "mixture" / "m_export"
    export(*_mixture(3), folder)
    leftover = folder.parent / ".m_export.tmp-0123abcd"  # what a SIGKILL during an export leaves
    (leftover / "hf_dataset").mkdir(parents=True)
    (folder / "mixture.jsonl.tmp").write_text("stray")  # the old export's own temp file
    paths = export(*_mixture(5), folder, extra_files={"README.md": "# m\n"})
    assert _export_state(folder) == (5, 5, 5)
    assert (folder / "README.md").read_text() == "# m\n" and paths["README.md"] == str(folder / "README.md")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["m_export"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "hf_dataset", "manifest.json", "mixture.jsonl"]


def test_manifest_is_written_last(tmp_path, monkeypatch):
    written = []
    real_write_text = compose.Path.write_text

    def recording_write_text(self, text, *args, **kwargs):
        written.append(self.name)
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(compose.Path, "write_text", recording_write_text)
    export(*_mixture(2), tmp_path / "m_export", extra_files={"README.md": "card"})
    assert written[-1] == "manifest.json" and "README.md" in written


@pytest.mark.parametrize("name", ["../escape.md", "a/b.md", "manifest.json", "hf_dataset", ".hidden", ""])
def test_extra_file_names_must_be_plain_and_free(tmp_path, name):
    with pytest.raises(ValueError, match="extra export file"):
        export(*_mixture(1), tmp_path / "m_export", extra_files={name: "x"})
    assert not (tmp_path / "escape.md").exists()
