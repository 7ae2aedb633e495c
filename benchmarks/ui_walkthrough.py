"""A browser walk-through of the Dagster UI that a reviewer can rerun (issue 20): after `make demo`,
start `dagster-webserver` on 127.0.0.1 against the demo's instance and take screenshots with
headless Chromium (Debian's `chromium`: `apt-get install -y chromium`) of the pages a new user
walks: the Runs page (runs named by their stage-family job), the Overview timeline, an asset's
checks page (results per partition, with the plots of the numbers they judged), an asset's
metadata (its events, and its partitions with theirs) and the asset graph.

    .venv/bin/python benchmarks/ui_walkthrough.py SCREENSHOT_DIR [--dagster-home .dagster_home]

Not part of the test suite, and not a speed benchmark: it compares nothing. It prints one line per
screenshot and, last, one JSON object with the files and the seconds each page took. `--quick`
(what `make bench` passes) takes only the Runs page, and reports `skipped` (exit 0) when there is
no instance with runs or no Chromium, so `make bench` passes on a machine without a demo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (file name, path of the page, what it should show)
PAGES = [
    ("runs.png", "/runs", "the Runs page: runs named by their stage-family job, with partition tags"),
    ("timeline.png", "/overview/activity/timeline", "the Overview timeline: the demo's jobs over time"),
    ("checks.png", "/assets/{checks_asset}?view=checks", "an asset's checks, each result with its partition"),
    ("metadata.png", "/assets/{plots_asset}?view=events", "an asset's latest materialization: metadata, charts"),
    ("partitions.png", "/assets/{plots_asset}?view=partitions&partition={partition}", "a partition and its metadata"),
    ("asset_graph.png", "/asset-groups", "the asset graph"),
]


def chromium() -> str | None:
    """The Chromium binary on PATH (Debian: `chromium`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_runs(dagster_home: Path) -> bool:
    """Whether the SQLite instance under `dagster_home` has a run storage (a demo has run)."""
    return (dagster_home / "storage" / "runs.db").is_file() or (dagster_home / "history" / "runs.db").is_file()


def start_webserver(dagster_home: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`dagster-webserver` on 127.0.0.1:`port` for the repo's workspace and the instance at
    `dagster_home`, in its own session (stopped by its process group, see `stop`). Like `make ui`,
    it first copies the top-level `dagster.yaml` into `dagster_home` (no community dialog)."""
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    webserver = Path(sys.executable).with_name("dagster-webserver")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONPATH": str(REPO), "DAGSTER_DISABLE_TELEMETRY": "1"}
    command = [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=dagster_home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until the webserver answers `/server_info`; RuntimeError when it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"dagster-webserver did not answer on port {port} within {timeout:.0f}s")


def stop(process: subprocess.Popen) -> None:
    """Stop the webserver's whole process group: SIGTERM, then SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def screenshot(browser: str, url: str, path: Path, *, window: str, budget_ms: int) -> None:
    """One headless Chromium screenshot of `url` into `path` (a throwaway profile per shot)."""
    with tempfile.TemporaryDirectory(prefix="ui-walkthrough-profile-") as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={window}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, start the webserver, take the screenshots, stop it; print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="ui-walkthrough", help="folder for the screenshots")
    parser.add_argument("--dagster-home", default=os.environ.get("DAGSTER_HOME") or str(REPO / ".dagster_home"))
    parser.add_argument("--checks-asset", default="mixture", help="asset whose checks page is shot")
    parser.add_argument("--plots-asset", default="rejection_samples", help="asset whose metadata and plots are shot")
    parser.add_argument("--partition", default="math", help="partition of --plots-asset whose page is shot")
    parser.add_argument("--window-size", default="1400,1000", help="browser window, WIDTH,HEIGHT")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time each page gets to load")
    parser.add_argument("--quick", action="store_true", help="the Runs page only; skip without a demo instance")
    args = parser.parse_args(argv)
    home, out = Path(args.dagster_home).resolve(), Path(args.out).resolve()
    browser = chromium()
    missing = "no Chromium (apt-get install -y chromium)" if browser is None else None
    missing = missing or (None if has_runs(home) else f"no Dagster instance with runs at {home} (run make demo)")
    if missing:
        print(json.dumps({"skipped": missing}))
        return 0 if args.quick else 2
    out.mkdir(parents=True, exist_ok=True)
    port, taken = free_port(), {}
    process = start_webserver(home, port, out / "webserver.log")
    try:
        wait_ready(port, process)
        for name, page, what in PAGES[:1] if args.quick else PAGES:
            url = f"http://127.0.0.1:{port}" + page.format(
                checks_asset=args.checks_asset, plots_asset=args.plots_asset, partition=args.partition
            )
            started = time.monotonic()
            screenshot(browser, url, out / name, window=args.window_size, budget_ms=args.budget_ms)
            taken[name] = round(time.monotonic() - started, 1)
            print(f"{out / name}  {url}  ({what})", flush=True)
    finally:
        stop(process)
    print(json.dumps({"screenshots": [str(out / n) for n in taken], "seconds": taken, "dagster_home": str(home)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
