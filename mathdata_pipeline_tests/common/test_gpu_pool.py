"""The `gpu` pool size from the GPU count: parsed from real `nvidia-smi -L` output, one step per
GPU (or group), never below 1, and the printed limit on a host without nvidia-smi."""

import subprocess
import sys

import pytest

from mathdata_pipeline.common.gpu_pool import count_gpus, gpu_pool_limit

# `nvidia-smi -L` on a host with two H100s, the second split into two MIG instances
LISTING = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0f3c1b2a-1111-2222-3333-444455556666)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-9a8b7c6d-1111-2222-3333-444455556666)
  MIG 3g.40gb     Device  0: (UUID: MIG-11111111-2222-3333-4444-555555555555)
  MIG 3g.40gb     Device  1: (UUID: MIG-66666666-7777-8888-9999-000000000000)
"""


def test_gpus_are_counted_from_the_listing():
    assert count_gpus(LISTING) == 2
    assert count_gpus("") == 0


def test_the_limit_is_one_step_per_gpu_group_and_never_zero():
    assert gpu_pool_limit(8) == 8
    assert gpu_pool_limit(8, gpus_per_step=2) == 4
    assert gpu_pool_limit(3, gpus_per_step=2) == 1
    assert gpu_pool_limit(0) == 1
    with pytest.raises(ValueError, match="gpus_per_step"):
        gpu_pool_limit(4, gpus_per_step=0)


def test_the_command_prints_the_limit(tmp_path):
    command = [sys.executable, "-m", "mathdata_pipeline.common.gpu_pool"]
    no_gpu = {"PATH": str(tmp_path), "PYTHONPATH": ":".join(sys.path)}  # no nvidia-smi on this PATH
    assert subprocess.run(command, env=no_gpu, capture_output=True, text=True, check=True).stdout == "1\n"
    cluster = {**no_gpu, "MATHDATA_GPUS": "8"}
    args = [*command, "--gpus-per-step", "2"]
    assert subprocess.run(args, env=cluster, capture_output=True, text=True, check=True).stdout == "4\n"
