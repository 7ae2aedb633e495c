"""The `mathdata` command line. Each subcommand lives in one `_add_<name>_command` function.

    mathdata grade FILE.jsonl [-o OUT.jsonl] [--timeout S] [--workers N] [--no-fallback] [--max-line-bytes N]
    mathdata trace ROW_ID [--storage ROOT] [--json]
    mathdata validate-config FILE.yaml
    mathdata publish SPEC --repo ORG/NAME [--private] [--dry-run] [--storage ROOT]
    mathdata release-runs [--run RUN_ID]

To add a subcommand (e.g. `mathdata trace ROW_ID`): write `_add_trace_command(subparsers)` that
registers its arguments and `set_defaults(handler=_run_trace)`, where `_run_trace(args) -> int`
returns the exit code, and append it to `_COMMANDS`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from mathdata_pipeline.common.json_records import RecordError, loads_record

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader went away
_GRADE_BATCH = 2000


class InputError(Exception):
    """A problem with the user's input file; reported as `mathdata <cmd>: error: ...`, exit 2."""


def _grade_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """Each non-blank line of a `grade` input file as (`FILE:LINE`, item), or (`FILE:LINE`, error
    message) when the line is bad. Each line must be a JSON object with string fields `response`
    and `reference` (a JSON number is accepted as reference) and an optional string-or-null
    `finish_reason`, of at most `max_line_bytes`. Raises InputError when the file cannot be opened."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise InputError(f"{path}: cannot open: {error.strerror or error}") from error
    with handle:
        number = 0
        while raw := handle.readline(max_line_bytes + 2):
            number += 1
            where = f"{path}:{number}"
            if len(raw.rstrip(b"\r\n")) > max_line_bytes:
                while not raw.endswith(b"\n") and (raw := handle.readline(2**20)):
                    pass  # skip the rest of the over-long line
                yield where, f"{where}: line is larger than {max_line_bytes} bytes (--max-line-bytes)"
                continue
            try:
                item = _grade_item(raw.decode("utf-8"), where)
            except UnicodeDecodeError as error:
                yield where, f"{where}: not valid UTF-8 ({error.reason})"
            except InputError as error:
                yield where, str(error)
            else:
                if item is not None:
                    yield where, item


def _grade_item(line: str, where: str) -> dict[str, Any] | None:
    """The validated item of one input line (`where` is `FILE:LINE`); None for a blank line.
    Raises InputError naming `where` and the field at fault."""
    if not line.strip():
        return None
    try:
        row = loads_record(line)
    except RecordError as error:
        field = f" field '{error.field}':" if error.field else ""
        raise InputError(f"{where}:{field} {error.message}") from error
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field in ("response", "reference"):
        if field not in row:
            raise InputError(f"{where}: missing field '{field}'")
    if not isinstance(row["response"], str):
        raise InputError(f"{where}: field 'response' must be a string")
    reference = row["reference"]
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        reference = str(reference)
    if not isinstance(reference, str):
        raise InputError(f"{where}: field 'reference' must be a string or a number")
    finish_reason = row.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise InputError(f"{where}: field 'finish_reason' must be a string or null")
    return {"response": row["response"], "reference": reference, "finish_reason": finish_reason}


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """The output stream: `path` opened for writing, or stdout when `path` is None or "-"."""
    if path is None or path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


def _run_grade(args: argparse.Namespace) -> int:
    """`mathdata grade`: one JSON line per non-blank input line, in order: the verdict {correct,
    extracted, reason}, or for a bad line {correct: false, extracted: null, reason:
    "invalid_input", error: "FILE:LINE: ..."} (also printed on stderr). Exit 2 when any line was bad."""
    from mathdata_pipeline.grading import Grader

    lines = _grade_lines(Path(args.file), args.max_line_bytes)
    first = next(lines, None)  # a file that cannot be opened fails before any output
    bad = 0
    with (
        Grader(timeout_s=args.timeout, workers=args.workers, fallback_last_number=not args.no_fallback) as grader,
        _output(args.output) as out,
    ):
        pending: list[tuple[str, dict[str, Any] | str]] = []
        for entry in itertools.chain([first] if first else [], lines):
            pending.append(entry)
            if len(pending) == _GRADE_BATCH:
                bad += _grade_batch(grader, pending, out)
                pending = []
        bad += _grade_batch(grader, pending, out)
    return EXIT_USAGE if bad else EXIT_OK


def _grade_batch(grader, entries: list[tuple[str, dict[str, Any] | str]], out: TextIO) -> int:
    """Grade the items of `entries` and write one line per entry in order; returns how many were bad."""
    items = [item for _, item in entries if isinstance(item, dict)]
    verdicts = iter(grader.grade_many(items) if items else [])
    bad = 0
    for _, item in entries:
        if isinstance(item, dict):
            line = next(verdicts).to_dict()
        else:
            bad += 1
            print(f"mathdata grade: error: {item}", file=sys.stderr)
            line = {"correct": False, "extracted": None, "reason": "invalid_input", "error": item}
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    out.flush()
    return bad


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _add_grade_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "grade",
        help="grade model responses against reference answers",
        description=(
            "Read JSON lines with 'response', 'reference' and optional 'finish_reason'; write "
            "one JSON line per input line with 'correct', 'extracted' and 'reason'."
        ),
    )
    parser.add_argument("file", metavar="FILE.jsonl", help="input JSON-lines file")
    parser.add_argument("-o", "--output", metavar="OUT.jsonl", help="output file (default: stdout)")
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="seconds allowed per symbolic check (default: 5)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        metavar="N",
        help="worker processes for symbolic checks (default: 2)",
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="do not use the last number of a response as its answer",
    )
    parser.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=16 * 2**20,
        metavar="N",
        help="longest input line in bytes; a longer one gets an error line (default: 16 MiB)",
    )
    parser.set_defaults(handler=_run_grade)


def _add_trace_command(subparsers: argparse._SubParsersAction) -> None:
    """`mathdata trace ROW_ID [--storage ROOT] [--json]`: the history of one mixture row, with the
    Dagster runs (id, job, time) that wrote its tables when `DAGSTER_HOME` names the instance."""
    parser = subparsers.add_parser(
        "trace", help="print the history of a mixture row (seed, generation, grade, selection, the runs that made it)"
    )
    parser.add_argument("row_id", help="the `row_id` of a mixture row (mx-…)")
    parser.add_argument("--storage", default="", help="storage root; default $MATHDATA_STORAGE or ./storage")
    parser.add_argument("--json", action="store_true", help="print the history as one JSON object")
    parser.set_defaults(handler=_run_trace)


def _run_trace(args: argparse.Namespace) -> int:
    from mathdata_pipeline.common.metadata import instance_run_lookup
    from mathdata_pipeline.mixtures.trace import format_history, trace_row
    from mathdata_pipeline.storage.resources import TableStore

    root = TableStore(root=args.storage).root_path()
    try:
        history = trace_row(root, args.row_id, runs=instance_run_lookup())
    except KeyError as error:
        print(f"mathdata trace: error: {error.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(history, default=str, ensure_ascii=False, indent=2) if args.json else format_history(history))
    return EXIT_OK


def _add_validate_config_command(subparsers: argparse._SubParsersAction) -> None:
    """`mathdata validate-config FILE.yaml`: check a run-config file before launching anything."""
    parser = subparsers.add_parser(
        "validate-config", help="check a run-config file (ops/resources) against the assets' config"
    )
    parser.add_argument("file", metavar="FILE.yaml", help="run-config file, e.g. configs/dart-paper.yaml")
    parser.set_defaults(handler=_run_validate_config)


def _run_validate_config(args: argparse.Namespace) -> int:
    from mathdata_pipeline.run_config import check_run_config_file

    try:
        check_run_config_file(args.file)
    except (ValueError, OSError) as error:
        print(f"mathdata validate-config: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: ok")
    return EXIT_OK


def _add_publish_command(subparsers: argparse._SubParsersAction) -> None:
    """`mathdata publish SPEC --repo ORG/NAME [--private] [--dry-run] [--storage ROOT]`: upload the
    last good export of a mixture spec and its dataset card to the Hugging Face Hub."""
    parser = subparsers.add_parser(
        "publish",
        help="upload a mixture's last good export and its card to the Hugging Face Hub",
        description=(
            "Upload README.md (the dataset card), mixture.jsonl and manifest.json of the export of SPEC "
            "in one commit. Refused (exit 1) when the export's check verdict has a failed check, or the "
            "spec changed since the export. The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT "
            "selects another Hub."
        ),
    )
    parser.add_argument("spec", metavar="SPEC", help="mixture spec name (configs/mixtures/SPEC.yaml)")
    parser.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub dataset repo to publish to")
    parser.add_argument("--private", action="store_true", help="create the repo private (a public one is refused)")
    parser.add_argument(
        "--dry-run", action="store_true", help="upload nothing: list the files and print the card (works offline)"
    )
    parser.add_argument("--storage", default="", help="storage root; default $MATHDATA_STORAGE or ./storage")
    parser.set_defaults(handler=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    from mathdata_pipeline.mixtures import publish
    from mathdata_pipeline.sources.readers import InputError as SpecError
    from mathdata_pipeline.storage.resources import TableStore

    store = TableStore(root=args.storage)
    try:
        publish.check_repo_id(args.repo)
        upload = publish.prepare_upload(store.fetch_folder(*publish.export_parts(args.spec)), args.spec)
        if args.dry_run:
            print(publish.describe(upload, args.repo, args.private, publish.hub_endpoint()), end="")
            return EXIT_OK
        for note in upload.notes:
            print(f"mathdata publish: note: {note}", file=sys.stderr)
        url = publish.push_to_hub(upload, args.repo, args.private)
    except SpecError as error:
        raise InputError(str(error)) from error
    except publish.PublishError as error:
        print(f"mathdata publish: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"published {args.spec} ({upload.manifest['rows']} rows) to {args.repo}: {url}")
    return EXIT_OK


def _add_release_runs_command(subparsers: argparse._SubParsersAction) -> None:
    """`mathdata release-runs [--run RUN_ID]`: free at once what killed runs hold."""
    parser = subparsers.add_parser(
        "release-runs",
        help="mark killed runs failed and free their pool slots now (the instance at DAGSTER_HOME)",
        description="Runs whose processes on this machine are gone are marked failed and their `gpu` "
        "pool slots freed. The daemon's sensor and every running run do this on their own within a minute.",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="RUN_ID",
        help="also release this run, which cannot be checked (another machine, or started before "
        "runs recorded their process); only for runs known to be dead; repeatable",
    )
    parser.set_defaults(handler=_run_release_runs)


def _run_release_runs(args: argparse.Namespace) -> int:
    from mathdata_pipeline.automation import release_runs_now

    try:
        released = release_runs_now(args.run)
    except ValueError as error:
        print(f"mathdata release-runs: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(f"released run {run_id}" for run_id in released) or "no killed runs")
    return EXIT_OK


_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_grade_command,
    _add_trace_command,
    _add_validate_config_command,
    _add_publish_command,
    _add_release_runs_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The `mathdata` argument parser with every subcommand of `_COMMANDS` registered."""
    parser = argparse.ArgumentParser(prog="mathdata", description="mathdata-pipeline tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mathdata` console script.

    Input: the arguments after the program name (default: `sys.argv[1:]`). Output: the exit
    code: 0 on success, 1 when `publish` refuses or the Hub rejects an upload, 2 for usage errors
    and bad input (message on stderr naming the file, line and field), 141 when the reader of
    the output went away (`mathdata trace --json | head`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except InputError as error:
        print(f"mathdata {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly, and point stdout at /dev/null so the
        # interpreter's final flush does not report the same broken pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
