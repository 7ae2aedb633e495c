"""Names that become paths or partition keys (sources, partitions, mixture specs, shards, ledgers,
exports): one rule, checked where a name enters, and one quoting for every path built from one.

A name is 1–64 characters of lower-case ASCII letters, digits, `_`, `-` and `.`, starting with a
letter or digit and never containing `..`: it is a valid Dagster partition key and a file name on
every platform, and it can never leave the folder it is joined to.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

MAX_NAME_LENGTH = 64
# Quoted names longer than this are shortened (a file system allows 255 bytes per component, and
# temp files add about 50 characters to a table's name).
_MAX_COMPONENT = 180
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


class InvalidName(ValueError):
    """A name that may not become a path or partition key; the message says where it came from."""


def check_name(name: str, *, what: str, where: str = "") -> str:
    """`name` when it follows the rule above; else InvalidName naming `where` (a file), `what` (e.g.
    "seed source") and the problem."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "is empty"
    elif len(name) > MAX_NAME_LENGTH:
        problem = f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    elif not _NAME.fullmatch(name):
        problem = "may hold only lower-case letters, digits, '_', '-' and '.', starting with a letter or digit"
    elif ".." in name:
        problem = "may not contain '..'"
    if problem:
        prefix = f"{where}: " if where else ""
        raise InvalidName(f"{prefix}{what} name {name!r} {problem}")
    return name


def path_component(name: str) -> str:
    """`name` quoted so that it is exactly one path component: every character outside
    [A-Za-z0-9_.~-] is percent-encoded, `.` and `..` are encoded whole, and a quoted name longer
    than 180 characters is cut to 163 plus `~` and 16 hex digits of its hash (still unique). Defence
    in depth for paths built from names, after `check_name` at the point of entry."""
    quoted = quote(name, safe="-_.")
    if quoted in ("", ".", ".."):
        quoted = quoted.replace(".", "%2E") or "%00"
    if len(quoted) > _MAX_COMPONENT:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        quoted = f"{quoted[: _MAX_COMPONENT - 17]}~{digest}"
    return quoted
