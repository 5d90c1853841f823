"""What our entry points keep off the terminal: DeepSpeed's CPU notice (dropped by `hide_known_noise`) and
`accelerate launch`'s defaults warning (the quick start's config passes every value). lm-eval's per-subject output
is tested in test_metrics_mmlu.py, the score table in test_callbacks.py and test_demo.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from .conftest import REPO_ROOT

NOTICE = "Setting accelerator to CPU"


def run(args: list[str], env: dict | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="DeepSpeed gives its CPU notice only where there is no GPU")
def test_deepspeeds_cpu_notice_is_dropped_and_nothing_else():
    pytest.importorskip("deepspeed")
    # The notice comes when DeepSpeed picks its accelerator (the Trainer imports it): once as it is, then again
    # after hide_known_noise() with the choice forgotten, beside another DeepSpeed warning that must still show.
    script = (
        "import logging, deepspeed\n"
        "from deepspeed.accelerator import real_accelerator\n"
        "from hf_unlearn.quiet import hide_known_noise\n"
        "print('--- hidden from here', flush=True)\n"
        "hide_known_noise(); hide_known_noise()\n"
        "real_accelerator.ds_accelerator = None\n"
        "real_accelerator.get_accelerator()\n"
        "logging.getLogger('DeepSpeed').warning('another warning')\n"
    )
    before, after = run([sys.executable, "-c", script]).split("--- hidden from here")
    assert NOTICE in before  # DeepSpeed still says it: the filter has something to drop
    assert NOTICE not in after and "another warning" in after


def test_the_quick_start_config_leaves_accelerate_nothing_to_fill_in(tmp_path):
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    script = [str(REPO_ROOT / "tests" / "scripts" / "print_ranks.py"), str(tmp_path)]
    home = {"HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "home" / "hf")}  # no saved default config
    assert "were not passed to `accelerate launch`" in run(launch + script, env=home)  # the warning exists
    config = ["--config_file", str(REPO_ROOT / "accelerate_configs" / "single_process.yaml")]
    output = run(launch + config + script, env=home)
    assert "were not passed" not in output and "defaults used instead" not in output
    assert (tmp_path / "rank0").read_text().split()[0] == "1"  # one process


def test_loading_a_saved_adapter_does_not_warn_about_checkpointing(tokenizer, tmp_path):
    """peft reads transformers' deprecated `is_gradient_checkpointing` whenever it wraps a model, also when it loads a
    saved adapter (`compare` scoring a run, `merge`/`evaluate --adapter`): every such place is quiet."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from hf_unlearn.cli import load_adapter
    from hf_unlearn.compare import _load
    from hf_unlearn.support.tiny import tiny_causal_lm

    model = tiny_causal_lm(tokenizer)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(model, LoraConfig(r=2, target_modules="all-linear")).save_pretrained(tmp_path / "adapter")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        _load(str(tmp_path / "base"), str(tmp_path / "adapter"))
        load_adapter(tiny_causal_lm(tokenizer), str(tmp_path / "adapter"), str(tmp_path / "base"))
