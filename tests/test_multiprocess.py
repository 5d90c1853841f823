"""Two real CPU processes (torchrun, gloo): training and LUME scoring agree with one process.

`ACCELERATE_USE_CPU=1` makes accelerate use the torchrun environment on a machine without GPU (without it, each
process would run alone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).parent / "scripts" / "train_with_callback.py"


def launch(args: list[str], processes: int, tmp_path: Path) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", "29533"] + args
    else:
        command = [sys.executable] + args
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def cli_two_ways(args: list[str], tmp_path: Path, port: str) -> tuple[str, str]:
    """Run `python ARGS` under 2 torchrun processes (`--output-dir tmp/two`) and alone (`tmp/one`); their stdouts."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = []
    for name, prefix in (("two", ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]),
                         ("one", [])):
        result = subprocess.run([sys.executable, *prefix, *args, "--output-dir", str(tmp_path / name)], env=env,
                                cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        out.append(result.stdout)
    return out[0], out[1]


def test_two_processes_train_and_score_like_one(saved, tmp_path):
    out = tmp_path / "out"
    model, data = str(saved / "model"), str(saved / "data")
    launch([str(SCRIPT), model, data, str(out), "2"], processes=2, tmp_path=tmp_path)
    launch([str(SCRIPT), model, data, str(out), "4"], processes=1, tmp_path=tmp_path)  # the same global batch
    rank0 = json.loads((out / "history_rank0_of2.json").read_text())
    rank1 = json.loads((out / "history_rank1_of2.json").read_text())
    single = json.loads((out / "history_rank0_of1.json").read_text())
    assert rank0 == rank1  # every process saw the same numbers
    losses = [e for e in rank0 if "loss" in e]
    single_losses = [e for e in single if "loss" in e]
    assert len(losses) == len(single_losses) == 2
    for multi, one in zip(losses, single_losses):
        for key in ("loss", "forget_nll", "npo_loss", "retain_nll"):
            assert multi[key] == pytest.approx(one[key], rel=1e-5), key
    scores = [e for e in rank0 if "lume/task_score" in e]
    single_scores = [e for e in single if "lume/task_score" in e]
    assert [e["step"] for e in scores] == [0, 2]
    assert scores[0]["lume/forget/regurgitation"] > 0.2  # partly memorised rows: the scores are not trivially 0
    for multi, one in zip(scores, single_scores):
        for key, value in one.items():
            if key.startswith(("lume/", "mia/")):
                assert multi[key] == pytest.approx(value, abs=1e-6), key


def test_cli_evaluate_under_two_processes_writes_single_process_results(saved, tmp_path):
    args = ["-m", "hf_unlearn.cli", "evaluate", "--model", str(saved / "model"), "--data", str(saved / "data"),
            "--mia", str(saved / "data" / "mia"), "--max-new-tokens", "16"]
    two, _ = cli_two_ways(args, tmp_path, port="29539")
    assert two.count("results written to") == 1  # only the main process writes and prints
    results_two = json.loads((tmp_path / "two" / "evaluation_results.jsonl").read_text())
    results_one = json.loads((tmp_path / "one" / "evaluation_results.jsonl").read_text())
    assert results_two["forget-set"] == results_one["forget-set"]
    assert results_two["retain-set"] == results_one["retain-set"]
    for key in ("mia_loss_auc", "mia_zlib_auc", "mia_min_k_auc", "mia_min_k_plus_plus_auc"):
        assert results_two[key] == pytest.approx(results_one[key], abs=1e-9), key


def test_cli_audit_under_two_processes_gives_the_single_process_audit(saved, tmp_path):
    # the memorised model audited against itself: the scores, not the verdicts, are what must agree
    args = ["-m", "hf_unlearn.cli", "audit", "--model", str(saved / "model"), "--original", str(saved / "model"),
            "--data", str(saved / "data"), "--split", "validation", "--mia", str(saved / "data" / "mia"),
            "--probes", "int4,relearn,prefix50", "--relearn-steps", "2", "--relearn-lr", "1e-3",
            "--max-new-tokens", "16"]
    two, _ = cli_two_ways(args, tmp_path, port="29541")
    assert two.count("audit written to") == 1
    audit_two = json.loads((tmp_path / "two" / "audit.json").read_text())
    audit_one = json.loads((tmp_path / "one" / "audit.json").read_text())
    for name in ("original", "unlearned"):
        assert audit_two["models"][name] == pytest.approx(audit_one["models"][name], abs=1e-6), name
    for name in ("int4", "relearn", "prefix50"):
        assert audit_two["probes"][name]["verdict"] == audit_one["probes"][name]["verdict"]
    assert audit_two["probes"]["relearn"]["attacked"] == pytest.approx(audit_one["probes"]["relearn"]["attacked"],
                                                                       abs=1e-6)
