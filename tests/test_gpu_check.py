"""benchmarks/gpu_check.py (issue #33), prepared for the rare session with a GPU: without one it says so and exits 2;
its --cpu-smoke run goes through every part's code on the CPU, so that it still runs unchanged when a GPU is lent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def test_without_a_gpu_it_says_so_and_exits_2():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check itself is what runs here")
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 2 and "needs a CUDA device" in out.stderr


def test_the_cpu_smoke_run_goes_through_every_part(tmp_path):
    env_threads = {"OMP_NUM_THREADS": "1"}
    import os

    out = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--output", str(tmp_path / "x.md")],
                         capture_output=True, text=True, env={**os.environ, **env_threads}, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for heading in ("## Step cost", "## Evaluation throughput", "## One SmolLM2 run of `hf-unlearn unlearn`"):
        assert heading in out.stdout
    assert "Failed:" not in out.stdout and "(b)/(a) memory" in out.stdout
    assert not (tmp_path / "x.md").exists()  # the smoke run writes no results file
