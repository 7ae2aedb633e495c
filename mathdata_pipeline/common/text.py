"""Text normalization and stable hashing shared by ids, deduplication and decontamination."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

_WORD_RE = re.compile(r"[a-z0-9]+")
_SPACE_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Canonical form of a question for identity and exact-match purposes.

    Input: any string. Output: NFKC-normalized, lower-cased text with runs of whitespace
    collapsed to one space and stripped at both ends. LaTeX and punctuation are kept, so two
    questions that differ only in spacing or case map to the same string.
    """
    text = unicodedata.normalize("NFKC", text)
    return _SPACE_RE.sub(" ", text.lower()).strip()


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric word tokens of `text` (punctuation and LaTeX markup dropped).

    Used for n-gram overlap: `"What is $2^{10}$?"` gives `["what", "is", "2", "10"]`.
    """
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).lower())


def stable_hash(*parts: str, length: int = 16) -> str:
    """Hex digest (sha256, first `length` characters) of `parts` joined with a 0x1f separator.

    The same parts always give the same id on every machine and Python version.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


def problem_id(source: str, question: str) -> str:
    """Stable id of a problem: hash of its source name and normalized question text."""
    return stable_hash("problem", source, normalize_text(question))


def params_hash(config: dict) -> str:
    """Hash of a stage's configuration (stored in `method_params_hash`)."""
    return stable_hash("params", json.dumps(config, sort_keys=True))
