"""Whether a process that ran something is still alive. A token names one process for good: host,
boot, pid and start time, so a reused pid or a reboot is never taken for the original process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot() -> str:
    """This boot of this machine: Linux's boot id, else the boot time."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return str(int(psutil.boot_time()))


def process_token(pid: int | None = None) -> str:
    """`host|boot|pid|start time` of process `pid` (default: this process)."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}|{_boot()}|{pid}|{psutil.Process(pid).create_time():.2f}"


def token_alive(token: str) -> bool | None:
    """Whether the process named by `token` is still running: True or False on the host that made
    the token, None on any other host (it cannot tell) or for a token it cannot read."""
    parts = token.split("|")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    host, boot, pid, started = parts
    if host != socket.gethostname():
        return None
    if boot != _boot():
        return False
    try:
        process = psutil.Process(int(pid))
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - float(started)) < 0.05
    except (ValueError, psutil.Error):
        return False


def pid_alive_since(pid: int, started_by: float) -> bool:
    """Whether process `pid` of this host is running (not a zombie) and started no later than
    `started_by` (a Unix time): a later start means the pid was reused by another process."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= started_by
    except psutil.Error:
        return False
