"""Publishing a mixture on the Hugging Face Hub: the last good export of a spec (its card, its
data file and its manifest), uploaded in one commit, only when the export's stored check verdict
says every check passed. Everything before the upload works offline (`describe` is the dry run)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mathdata_pipeline.mixtures.card import CARD_FILE, DATA_FILE, MANIFEST_FILE
from mathdata_pipeline.mixtures.spec import load_mixture_spec

PUBLISHED_FILES = (CARD_FILE, DATA_FILE, MANIFEST_FILE)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class PublishError(Exception):
    """A mixture that is not published, and why (nothing was uploaded)."""


@dataclass(frozen=True)
class Upload:
    """What one publication uploads: the spec name, its export folder, the files in commit order
    and the export's manifest; `notes` are warnings worth showing (nothing that blocks)."""

    spec: str
    folder: Path
    files: list[Path]
    manifest: dict
    notes: list[str] = field(default_factory=list)

    def commit_message(self) -> str:
        """The Hub commit message: spec, config hash and row count."""
        return f"mixture {self.spec}: config {self.manifest['config_hash']}, {self.manifest['rows']} rows"


def export_parts(spec: str) -> tuple[str, str]:
    """The folder of the export of spec `spec` under the storage root, as path components."""
    return "mixture", f"{spec}_export"


def export_folder(root: Path, spec: str) -> Path:
    """Where the `mixture` asset exports spec `spec` under the local storage `root`."""
    return Path(root).joinpath(*export_parts(spec))


def check_repo_id(repo: str) -> str:
    """`repo` when it is a Hub repo id `ORG/NAME`; raises PublishError otherwise."""
    if not REPO_ID.match(repo):
        raise PublishError(f"--repo {repo!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")
    return repo


def prepare_upload(folder: Path, spec: str) -> Upload:
    """Check the export of `spec` in `folder` and say what publishing it uploads (no network).

    Refuses (PublishError naming the reason and what to do) when: the folder, its card, data file or
    manifest is missing; the manifest carries no check verdict, or any check failed; the export was
    built from another version of the spec than `configs/mixtures/<spec>.yaml` (its config hash
    differs); the data file's line count is not the manifest's row count. A spec file that cannot
    be read raises InputError.
    """
    current = load_mixture_spec(spec).config_hash()
    if not folder.is_dir():
        raise PublishError(
            f"no export of mixture {spec!r} at {folder}: materialize `mixture` for {spec} first "
            "(only a mixture that passes every check is exported)"
        )
    missing = [name for name in PUBLISHED_FILES if not (folder / name).is_file()]
    if missing:
        raise PublishError(f"{folder}: missing {', '.join(missing)}; rematerialize `mixture` for {spec}")
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PublishError(f"{folder / MANIFEST_FILE}: not valid JSON ({error}); rematerialize `mixture`") from error
    checks = manifest.get("checks") or {}
    if not checks:
        raise PublishError(f"{folder / MANIFEST_FILE}: no check verdict recorded; rematerialize `mixture` for {spec}")
    failed = [f"{name} ({verdict['description']})" for name, verdict in checks.items() if not verdict["passed"]]
    if failed:
        raise PublishError(f"mixture {spec!r} failed its checks: {'; '.join(failed)}")
    if manifest["config_hash"] != current:
        raise PublishError(
            f"the export of {spec!r} was built from config {manifest['config_hash']}, but "
            f"configs/mixtures/{spec}.yaml is now config {current}: rematerialize `mixture` for {spec}"
        )
    with open(folder / DATA_FILE, "rb") as handle:
        lines = sum(1 for _ in handle)
    if lines != manifest["rows"]:
        raise PublishError(f"{folder / DATA_FILE}: {lines} lines, but the manifest says {manifest['rows']} rows")
    return Upload(spec, folder, [folder / name for name in PUBLISHED_FILES], manifest, _notes(folder, spec))


def _notes(folder: Path, spec: str) -> list[str]:
    """A warning when the latest build of the spec failed its checks after this export was made."""
    rejected = folder.parent.parent / "mixture_rejected" / f"{spec}.parquet"
    if rejected.is_file() and rejected.stat().st_mtime > (folder / MANIFEST_FILE).stat().st_mtime:
        return [f"the latest build of {spec} failed its checks ({rejected}); this is the last good export"]
    return []


def describe(upload: Upload, repo: str, private: bool, endpoint: str) -> str:
    """The dry run: the target, every file with its size and sha256, then the card, verbatim."""
    lines = [
        f"dry run: nothing uploaded. `mathdata publish` would commit to dataset repo {repo} "
        f"({'private' if private else 'public'}) at {endpoint}:",
        f"  mixture {upload.spec}, config {upload.manifest['config_hash']}, {upload.manifest['rows']} rows, "
        f"checks passed: {', '.join(upload.manifest['checks'])}",
        f"  commit message: {upload.commit_message()}",
        f"files ({len(upload.files)}, from {upload.folder}):",
    ]
    for path in upload.files:
        data = path.read_bytes()
        lines.append(f"  {path.name:<16} {len(data):>12,} bytes  sha256 {hashlib.sha256(data).hexdigest()}")
    lines += [*(f"note: {note}" for note in upload.notes), f"----- {CARD_FILE} -----"]
    return "\n".join(lines) + "\n" + (upload.folder / CARD_FILE).read_text(encoding="utf-8")


def hub_endpoint() -> str:
    """The Hub to upload to: `HF_ENDPOINT` when set (read at call time), else huggingface.co."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def push_to_hub(upload: Upload, repo: str, private: bool, token: str | None = None) -> str:
    """Create the dataset repo `repo` if needed and commit the upload's files in one commit; returns
    the commit URL. `private`: create the repo private, and refuse an existing public repo rather
    than publish there. The token is `token`, else HF_TOKEN or the saved login. Raises
    PublishError (no token, offline mode, the Hub refused) before or instead of a partial upload."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_repo_id(repo)
    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing uploaded)")
    api = HfApi(endpoint=hub_endpoint(), token=token)
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        if private and not api.repo_info(repo, repo_type="dataset").private:
            raise PublishError(f"{repo} exists and is public; --private would not hide it (nothing uploaded)")
        operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in upload.files]
        commit = api.create_commit(repo, operations, commit_message=upload.commit_message(), repo_type="dataset")
    except OfflineModeIsEnabled as error:
        raise PublishError("HF_HUB_OFFLINE is set: nothing uploaded (use --dry-run to see what would be)") from error
    except (HfHubHTTPError, ValueError) as error:  # ValueError: the Hub found the card's YAML invalid
        raise PublishError(f"the Hub refused the upload to {repo}: {error}") from error
    return commit.commit_url
