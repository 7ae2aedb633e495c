"""docker/: the compose file's services refer to files, modules and services that exist, and the
code location starts exactly as the compose file starts it and serves its repository over gRPC."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._grpc.client import DagsterGrpcClient

from mathdata_pipeline_tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


def _image_files(dockerfile: Path) -> dict[str, Path]:
    """Where a Dockerfile's COPY lines put repository files: {path in the image: path in the repo}."""
    workdir, files = "/", {}
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["WORKDIR"]:
            workdir = words[1]
        if words[:1] == ["COPY"]:
            *sources, target = words[1:]
            if not target.startswith("/"):
                target = f"{workdir.rstrip('/')}/{target.removeprefix('./')}"
            into_folder = len(sources) > 1 or target.endswith("/")
            for source in sources:
                files[f"{target.rstrip('/')}/{Path(source).name}" if into_folder else target] = REPO / source
    return files


def _service_dockerfile(service: dict) -> Path:
    """The Dockerfile a compose service builds (its build context is the repository root)."""
    assert (DOCKER / service["build"]["context"]).resolve() == REPO
    return REPO / service["build"]["dockerfile"]


def test_every_dockerfile_copies_files_that_exist():
    for dockerfile in (DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"):
        files = _image_files(dockerfile)
        assert files, dockerfile
        for target, source in files.items():
            assert source.exists(), f"{dockerfile.name}: COPY of missing {source} to {target}"


def test_every_compose_command_refers_to_things_that_exist():
    services = COMPOSE["services"]
    assert {"postgres", "codelocation", "webserver", "daemon", "vllm", "ray-head", "ray-worker"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        if "build" not in service:
            continue
        files = _image_files(_service_dockerfile(service))
        command = service["command"]
        if command[0].startswith("/"):
            assert command[0] in files and os.access(files[command[0]], os.X_OK), f"{name}: {command[0]}"
        elif command[0] != "vllm":  # vllm comes with the gpu extra, absent on this machine
            assert (Path(sys.executable).parent / command[0]).is_file(), f"{name}: no executable {command[0]}"
        for flag, value in zip(command, command[1:]):
            if flag == "-m":
                assert importlib.util.find_spec(value) is not None, f"{name}: no module {value}"
        for argument in command:
            if argument.startswith("/opt/"):
                assert argument in files, f"{name}: {argument} is not copied into the image"
        if command[0] not in ("vllm", "ray"):  # the model server and the Ray nodes hold no Dagster state
            assert {f"DAGSTER_PG_{key}" for key in ("HOST", "PORT", "USER", "PASSWORD", "DB")} <= set(
                service["environment"]
            ), name
    instance_yaml = (DOCKER / "dagster.yaml").read_text()
    for variable in re.findall(r"env: (\w+)", instance_yaml):
        assert variable in services["codelocation"]["environment"], variable


def test_workspace_points_at_the_code_location_service():
    (entry,) = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"]
    server = COMPOSE["services"]["codelocation"]["command"]
    assert entry["grpc_server"]["host"] == "codelocation"
    assert str(entry["grpc_server"]["port"]) == server[server.index("-p") + 1]
    assert entry["grpc_server"]["location_name"] == "mathdata_pipeline"


def _wait_for_server(client: DagsterGrpcClient, server: subprocess.Popen, log: Path, seconds: float) -> None:
    """Ping the gRPC server until it answers; fail with its output (`log`) if it exits or never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the code location server exited: {log.read_text()}")
        try:
            client.ping("up")
            return
        except Exception:
            time.sleep(0.5)
    raise AssertionError(f"the code location server did not answer within {seconds} s")


@pytest.mark.slow
def test_code_location_serves_its_repository_as_compose_starts_it(tmp_path):
    command = list(COMPOSE["services"]["codelocation"]["command"])
    port = free_port()
    command[command.index("-h") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = str(port)
    command[0] = str(Path(sys.executable).with_name(command[0]))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(tmp_path)}
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe nobody reads would block the server
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(DagsterGrpcClient(port=port, host="127.0.0.1"), server, log, seconds=180)
        workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
        workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=port)
        (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
        with (
            dg.instance_for_test() as instance,
            WorkspaceProcessContext(instance, WorkspaceFileTarget([str(tmp_path / "workspace.yaml")])) as context,
        ):
            request = context.create_request_context()
            assert not request.has_code_location_error("mathdata_pipeline"), request.get_code_location_error(
                "mathdata_pipeline"
            )
            (repository,) = request.get_code_location("mathdata_pipeline").get_repositories().values()
            assert repository.has_job("mixture_job")
            keys = {node.asset_key for node in repository.get_asset_node_snaps()}
            assert dg.AssetKey("general_pool") in keys and dg.AssetKey("seed_problems") in keys
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a graceful shutdown can outlast a busy machine's patience
            server.kill()
            server.wait(timeout=30)
