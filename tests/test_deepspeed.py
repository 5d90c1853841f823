"""DeepSpeed ZeRO-2 and ZeRO-3 with LoRA on two real CPU processes (gloo): the loss trajectory (with the reference
pass through `disable_adapter()` on ZeRO-3's gathered parameters) and the LUME callback's scores equal a single
process's with the same global batch. The callback generates up to 48 new tokens on real LUME validation rows
(several rounds, uneven row splits), runs the MIA and MMLU through lm-eval on local `cais/mmlu` files: under ZeRO-3
every forward pass is collective, so this checks that the processes stay in step and exit cleanly.

The first DeepSpeed run on a machine compiles a shared-memory op (about 20 s, longer on a loaded machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SHARED_DATA

pytest.importorskip("deepspeed")  # the [deepspeed] extra; installed here, so these tests run


SCRIPT = Path(__file__).parent / "scripts" / "train_deepspeed.py"
REPO_ROOT = Path(__file__).resolve().parents[1]


def launch_env(stage: int) -> dict[str, str]:
    """One thread per process; plain data parallel on CPU for stage 0, DeepSpeed's path otherwise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if stage:
        env.pop("ACCELERATE_USE_CPU", None)  # with it, transformers ignores the DeepSpeed config
    else:
        env["ACCELERATE_USE_CPU"] = "1"
    return env


def launch(args: list[str], processes: int, stage: int, port: int, timeout: int) -> None:
    """`python ARGS`, under torchrun with `processes` processes when there are several."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(port)]
    command = [sys.executable] + (launcher if processes > 1 else []) + args
    # A process left waiting on a collective would hang until the timeout; a clean run exits 0 on every rank.
    result = subprocess.run(command, env=launch_env(stage), cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]


def run(saved_dir: Path, out: Path, processes: int, batch: int, stage: int, method: str, port: int) -> list[dict]:
    launch([str(SCRIPT), str(saved_dir / "model"), str(saved_dir / "data"), str(out), str(batch), str(stage), method,
            str(SHARED_DATA / "mmlu")], processes, stage, port, timeout=400)
    histories = [
        json.loads((out / f"history_{method}_z{stage}_rank{rank}_of{processes}.json").read_text())
        for rank in range(processes)
    ]
    assert all(h == histories[0] for h in histories)  # every process logged the same numbers
    return histories[0]


@pytest.fixture(scope="module")
def single(saved, tmp_path_factory):
    """One process, batch 4 = two processes x batch 2, no DeepSpeed."""
    out = tmp_path_factory.mktemp("single")
    return {method: run(saved, out, 1, 4, 0, method, 29560) for method in ("npo", "gd")}


@pytest.mark.parametrize(("stage", "method"), [(2, "npo"), (3, "npo"), (3, "gd")])
def test_zero_two_processes_match_one_process(stage, method, saved, single, tmp_path):
    history = run(saved, tmp_path, 2, 2, stage, method, 29561 + stage)
    meta, expected_meta = history.pop(), dict(single[method][-1])
    generated, expected_generated = meta.pop("generated_tokens"), expected_meta.pop("generated_tokens")
    assert meta == {"zero_stage": stage, "partitioned": stage == 3}
    assert expected_meta == {"zero_stage": 0, "partitioned": False}
    assert generated == expected_generated
    assert max(generated) > 32  # past the first round: finished rows were dropped and the rest resumed
    expected = single[method][:-1]
    losses = [e for e in history if "loss" in e]
    expected_losses = [e for e in expected if "loss" in e]
    assert len(losses) == len(expected_losses) == 3
    keys = ("loss", "forget_nll") + (("npo_loss", "retain_nll", "retain_kl") if method == "npo" else ("retain_nll",))
    for multi, one in zip(losses, expected_losses):
        for key in keys:
            assert multi[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (key, multi["step"])
    assert losses[-1]["loss"] != losses[0]["loss"]  # the adapter trained
    scores = [e for e in history if "lume/task_score" in e]
    expected_scores = [e for e in expected if "lume/task_score" in e]
    assert [e["step"] for e in scores] == [e["step"] for e in expected_scores] == [0, 3]
    assert all({"mia/auc", "mmlu/acc", "lume/final_score"} <= set(e) for e in scores + expected_scores)
    for multi, one in zip(scores, expected_scores):
        for key, value in one.items():
            if key.startswith(("lume/", "mia/", "mmlu/")):
                assert multi[key] == pytest.approx(value, abs=1e-5), (key, multi["step"])


EVERY_METHOD = Path(__file__).parent / "scripts" / "every_method_zero.py"


def first_steps(saved_dir: Path, out: Path, processes: int, batch: int, stage: int, port: int) -> dict:
    launch([str(EVERY_METHOD), str(saved_dir / "model"), str(saved_dir / "data"), str(out), str(batch), str(stage)],
           processes, stage, port, timeout=600)
    return json.loads((out / f"first_steps_z{stage}.json").read_text())


@pytest.fixture(scope="module")
def single_first_steps(saved, tmp_path_factory):
    """Every method's first step on one process, batch 4 = two processes x batch 2, no DeepSpeed."""
    return first_steps(saved, tmp_path_factory.mktemp("every-single"), 1, 4, 0, 29570)


@pytest.mark.parametrize("stage", [2, 3])
def test_every_method_takes_the_same_first_steps_under_zero(stage, saved, single_first_steps, tmp_path):
    multi = first_steps(saved, tmp_path, 2, 2, stage, 29571 + stage)
    one = single_first_steps
    # every registered method is run (a new one must be added to the script's SETTINGS), plus the chunked schedule
    assert set(one["registered"]) <= set(one) and "chunked" in one
    assert (one["processes"], multi["processes"]) == (1, 2)
    for name, expected in one.items():
        if name in ("registered", "libu", "processes"):
            continue
        assert "refused" not in expected, (name, expected)
        assert "refused" not in multi[name], (name, multi[name])
        assert expected["loss"] != 0.0, name
        for key, value in expected.items():
            if key in ("grad_norm", "learning_rate", "epoch"):
                continue  # the gradient norm is clipped per engine; the rest are schedule bookkeeping
            assert multi[name][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, key)
    # LIBU's influence step reads and writes the parameters' .grad, which ZeRO shards: refused before training
    assert "refused" not in one["libu"]
    assert "not supported with DeepSpeed" in multi["libu"]["refused"]


@pytest.mark.parametrize("stage", [0, 3])
def test_two_nodes_take_the_first_step_of_one_process(stage, saved, single_first_steps, tmp_path):
    """Two "nodes" on this machine (torchrun --nnodes 2, node ranks 0 and 1, one process each, a rendezvous on
    127.0.0.1): NPO + NLL + KL under DDP (stage 0) and ZeRO-3 give the single process's first step."""
    port = str(29580 + stage)
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port, str(EVERY_METHOD),
             str(saved / "model"), str(saved / "data"), str(tmp_path), "2", str(stage), "npo"],
            env=launch_env(stage), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=600)
        assert node.returncode == 0, stderr[-4000:]
    multi = json.loads((tmp_path / f"first_steps_z{stage}.json").read_text())
    assert multi["processes"] == 2  # the nodes met: one run over both
    multi, expected = multi["npo"], single_first_steps["npo"]
    for key in ("loss", "forget_nll", "npo_loss", "retain_nll", "retain_kl", "second_loss"):
        assert multi[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
