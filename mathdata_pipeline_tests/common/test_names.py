"""The one rule for names that become paths or partition keys, and the one quoting."""

from __future__ import annotations

import pytest

from mathdata_pipeline.common.names import InvalidName, check_name, path_component

BAD_NAMES = {
    "..": "'..'",
    "../../../../escape_ledger": "may hold only",
    "a/b": "may hold only",
    "nul\x00byte": "may hold only",
    "ünïcödé": "may hold only",
    "x" * 65: "65 characters long",
    "é" * 60: "may hold only",
    "My Spec": "may hold only",
    "v2...draft": "'..'",
    "": "is empty",
    "-leading-dash": "may hold only",
}


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_bad_names_are_refused_naming_the_file_and_the_name(name):
    with pytest.raises(InvalidName) as error:
        check_name(name, what="seed source", where="configs/sources.yaml")
    message = str(error.value)
    assert message.startswith("configs/sources.yaml: seed source name ") and repr(name) in message
    assert BAD_NAMES[name] in message


@pytest.mark.parametrize("name", ["gsm8k", "math", "openmathmix-pruned", "reasoning-only", "000", "v2.draft", "a" * 64])
def test_good_names_pass_unchanged(name):
    assert check_name(name, what="mixture spec") == name


@pytest.mark.parametrize("name", [*BAD_NAMES, ".", "a" * 300])
def test_path_component_is_always_one_harmless_component(name):
    quoted = path_component(name)
    assert quoted not in ("", ".", "..") and "/" not in quoted and "\x00" not in quoted
    assert len(quoted) <= 180 and quoted.isascii()


def test_path_component_keeps_valid_names_and_shortens_long_ones_uniquely():
    assert path_component("openmathmix") == "openmathmix"
    assert path_component("a" * 300) != path_component("a" * 301)
