"""`mathdata publish` and the `published_mixture` asset: the dry run, the refusals, and the
upload itself against a Hub endpoint on 127.0.0.1 that records every request (this machine cannot
reach the Hub; HF_ENDPOINT points huggingface_hub at the recorder)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from mathdata_pipeline import cli
from mathdata_pipeline.definitions import ASSETS, RESOURCES
from mathdata_pipeline.mixtures.publish import PUBLISHED_FILES, PublishError, export_folder, prepare_upload
from mathdata_pipeline_tests.mixtures.conftest import SPEC

pytestmark = pytest.mark.slow


class HubRecorder(ThreadingHTTPServer):
    """A Hub API endpoint on 127.0.0.1 that records each request as {method, path, headers, body}
    and answers the calls an upload makes (create repo, repo info, YAML validation, preupload,
    commit); `public` makes repo info report an existing public repo."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecorderHandler)
        self.requests: list[dict] = []
        self.public = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self) -> list[str]:
        """`METHOD path` of every recorded upload request, in order (huggingface_hub's own
        best-effort fetch of `/api/agent-harnesses` is left out)."""
        return [f"{r['method']} {r['path']}" for r in self.requests if r["path"] != "/api/agent-harnesses"]

    def body(self, call: str) -> dict:
        """The JSON body of the one recorded request `METHOD path`."""
        (request,) = [r for r in self.requests if f"{r['method']} {r['path']}" == call]
        return json.loads(request["body"])

    def committed_files(self) -> dict[str, bytes]:
        """{path: content} of the files in the recorded commit."""
        (commit,) = [r for r in self.requests if "/commit/" in r["path"]]
        lines = [json.loads(line) for line in commit["body"].splitlines()]
        return {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}


class _RecorderHandler(BaseHTTPRequestHandler):
    server: HubRecorder

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        self.server.requests.append(
            {
                "method": self.command,
                "path": path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(),
            }
        )
        repo = re.match(r"^/api/datasets/([^/]+/[^/]+)", path)
        if path == "/api/repos/create":
            payload = json.loads(body)
            reply = {"url": f"{self.server.url}/datasets/{payload['organization']}/{payload['name']}"}
        elif path == "/api/validate-yaml":
            reply = {"errors": [], "warnings": []}
        elif repo and "/preupload/" in path:
            files = json.loads(body)["files"]
            reply = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        elif repo and "/commit/" in path:
            oid = hashlib.sha1(body).hexdigest()
            reply = {"commitUrl": f"{self.server.url}/datasets/{repo[1]}/commit/{oid}", "commitOid": oid}
        elif repo and self.command == "GET":
            reply = {"id": repo[1], "private": not self.server.public, "sha": "0" * 40}
        else:
            self.send_error(404)
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def hub() -> Iterator[HubRecorder]:
    server = HubRecorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _publish(storage, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`mathdata publish SPEC ARGS…` in a fresh process with `env` on top of this one's (and
    huggingface_hub's files under the storage root, not in the home folder)."""
    environment = {**os.environ, "MATHDATA_STORAGE": str(storage), "HF_HOME": str(storage / "hf_home"), **env}
    return subprocess.run(
        [sys.executable, "-m", "mathdata_pipeline.cli", "publish", SPEC, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_dry_run_lists_exactly_the_files_and_prints_the_card_offline(small_mixture):
    root = small_mixture.local_dir(purpose="test")
    folder = export_folder(root, SPEC)
    env = {"HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    done = _publish(root, "--repo", "test-org/mix", "--private", "--dry-run", **env)
    assert done.returncode == 0, done.stderr
    head, card = done.stdout.split("----- README.md -----\n")
    assert card == (folder / "README.md").read_text()
    assert "nothing uploaded" in head and "dataset repo test-org/mix (private)" in head
    listed = re.findall(r"^  (\S+)\s+([\d,]+) bytes  sha256 ([0-9a-f]{64})$", head, re.MULTILINE)
    assert [name for name, _, _ in listed] == list(PUBLISHED_FILES)
    for name, size, digest in listed:
        data = (folder / name).read_bytes()
        assert int(size.replace(",", "")) == len(data) and digest == hashlib.sha256(data).hexdigest()


def test_publish_refuses_failed_checks_a_missing_verdict_and_a_changed_spec(small_mixture, tmp_path, config_copy):
    folder = tmp_path / "mixture" / f"{SPEC}_export"
    shutil.copytree(export_folder(small_mixture.local_dir(purpose="test"), SPEC), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert prepare_upload(folder, SPEC).files == [folder / name for name in PUBLISHED_FILES]
    rejected = tmp_path / "mixture_rejected" / f"{SPEC}.parquet"  # a later build that failed its checks
    rejected.parent.mkdir()
    rejected.write_bytes(b"")
    os.utime(rejected, (rejected.stat().st_atime, (folder / "manifest.json").stat().st_mtime + 60))
    assert prepare_upload(folder, SPEC).notes == [
        f"the latest build of {SPEC} failed its checks ({rejected}); this is the last good export"
    ]

    failed = {**manifest["checks"], "no_duplicate_rows": {"passed": False, "description": "row mx-1 repeats"}}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "checks": failed}))
    with pytest.raises(PublishError, match=r"failed its checks: no_duplicate_rows \(row mx-1 repeats\)"):
        prepare_upload(folder, SPEC)
    assert cli.main(["publish", SPEC, "--repo", "o/n", "--storage", str(tmp_path)]) == cli.EXIT_REFUSED

    (folder / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "checks"}))
    with pytest.raises(PublishError, match="no check verdict recorded"):
        prepare_upload(folder, SPEC)

    (folder / "manifest.json").write_text(json.dumps(manifest))
    config_copy(SPEC, "tolerance: 0.05")
    with pytest.raises(PublishError, match=rf"built from config {manifest['config_hash']}.*rematerialize"):
        prepare_upload(folder, SPEC)
    assert cli.main(["publish", SPEC, "--repo", "not a repo", "--storage", str(tmp_path)]) == cli.EXIT_REFUSED


def test_publish_uploads_the_export_in_one_commit(small_mixture, hub):
    root = small_mixture.local_dir(purpose="test")
    folder = export_folder(root, SPEC)
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HUB_OFFLINE": "0"}
    done = _publish(root, "--repo", "test-org/mix", "--private", **env)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"published {SPEC} \(12 rows\) to test-org/mix: {hub.url}/datasets/test-org/mix/commit/\w+\n", done.stdout
    )
    assert hub.calls() == [
        "POST /api/repos/create",
        "GET /api/datasets/test-org/mix",
        "POST /api/validate-yaml",
        "POST /api/datasets/test-org/mix/preupload/main",
        "POST /api/datasets/test-org/mix/commit/main",
    ]
    created = hub.body("POST /api/repos/create")
    assert created == {"name": "mix", "organization": "test-org", "visibility": "private", "type": "dataset"}
    uploads = [r for r in hub.requests if r["path"] != "/api/agent-harnesses"]
    assert all(r["headers"]["authorization"] == "Bearer hf_test_token" for r in uploads)
    assert hub.body("POST /api/validate-yaml")["content"] == (folder / "README.md").read_text()
    assert hub.committed_files() == {name: (folder / name).read_bytes() for name in PUBLISHED_FILES}


def test_private_publishing_refuses_an_existing_public_repo(small_mixture, hub):
    hub.public = True
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HUB_OFFLINE": "0"}
    done = _publish(small_mixture.local_dir(purpose="test"), "--repo", "test-org/open", "--private", **env)
    assert done.returncode == 1 and "test-org/open exists and is public" in done.stderr
    assert not [call for call in hub.calls() if "/commit/" in call]


def test_publish_without_a_token_or_offline_uploads_nothing(small_mixture, hub, tmp_path):
    root = small_mixture.local_dir(purpose="test")
    no_login = {"HF_HOME": str(tmp_path), "HF_TOKEN": ""}
    done = _publish(root, "--repo", "test-org/mix", HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", **no_login)
    assert done.returncode == 1 and "no Hugging Face token" in done.stderr
    done = _publish(root, "--repo", "test-org/mix", HF_ENDPOINT=hub.url, HF_TOKEN="hf_x", HF_HUB_OFFLINE="1")
    assert done.returncode == 1 and "HF_HUB_OFFLINE is set: nothing uploaded" in done.stderr
    assert hub.calls() == []


def test_published_mixture_is_off_until_a_repo_is_configured(small_mixture, hub, monkeypatch):
    from huggingface_hub import constants

    resources = {**RESOURCES, "store": small_mixture}
    off = dg.materialize(ASSETS, selection=["published_mixture"], partition_key=SPEC, resources=resources)
    assert off.success and off.get_asset_materialization_events() == [] and hub.calls() == []

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # this test process is offline for the real Hub
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    config = {"ops": {"published_mixture": {"config": {"repo": "test-org/{spec}", "private": False}}}}
    on = dg.materialize(
        ASSETS, selection=["published_mixture"], partition_key=SPEC, resources=resources, run_config=config
    )
    (event,) = on.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["repo"].value == f"test-org/{SPEC}" and metadata["rows"].value == 12
    assert metadata["commit_url"].value.startswith(f"{hub.url}/datasets/test-org/{SPEC}/commit/")
    assert hub.body("POST /api/repos/create")["visibility"] == "public"
    assert set(hub.committed_files()) == set(PUBLISHED_FILES)
