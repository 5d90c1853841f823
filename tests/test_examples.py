"""The example scripts run end to end on tiny models (offline), their flags come from dataclasses, and the accelerate
configs load and start the processes they say."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig

from .conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
CONFIGS = REPO_ROOT / "accelerate_configs"


def run(args: list[str], tmp_path: Path, env: dict | None = None, timeout: int = 400) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           **(env or {})}
    result = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result.stdout


@pytest.mark.parametrize("script", ["run_npo.py", "run_influence.py"])
def test_help_lists_method_lora_and_callback_flags(script, tmp_path):
    # (TrlParser reads --config before argparse, so --help does not list it: the YAML test below uses it)
    text = run([sys.executable, str(EXAMPLES / script), "--help"], tmp_path)
    for flag in ("--method", "--retain_kl_weight", "--use_peft", "--lora_r", "--eval_data", "--mia_dir",
                 "--mmlu", "--mmlu_limit", "--eval_every", "--eval_unit", "--eval_max_new_tokens", "--merge_output"):
        assert flag in text, flag
    if script == "run_influence.py":
        assert "--damping" in text and "--sophia_rho" in text
        # without --dataset only run_npo.py runs the demo: run_influence.py's help must not promise it
        assert "Required, except by run_npo.py" in " ".join(text.split())


def test_run_npo_from_a_yaml_config_with_callbacks_and_merge(tmp_path, lume_dir):
    out, merged, mia = tmp_path / "out", tmp_path / "merged", tmp_path / "mia"
    mia.mkdir()
    for name in ("member", "nonmember"):  # a few documents of each: the attack's mechanics, quickly
        lines = (lume_dir / "mia" / f"{name}.jsonl").read_text().splitlines()[:4]
        (mia / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    config = {
        "dataset": str(lume_dir), "num_rows": 4, "tiny_memorise_epochs": 3, "use_peft": True, "lora_r": 4,
        "lora_alpha": 8, "lora_target_modules": ["all-linear"], "learning_rate": 3e-3, "max_steps": 2,
        "per_device_train_batch_size": 2, "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        "retain_kl_weight": 0.5, "output_dir": str(out), "use_cpu": True, "disable_tqdm": True,
        "eval_data": str(lume_dir), "eval_split": "validation", "eval_num_rows": 3, "mia_dir": str(mia),
        "eval_every": 2, "eval_unit": "step", "eval_max_new_tokens": 8, "merge_output": str(merged),
    }
    (tmp_path / "npo.yaml").write_text(yaml.safe_dump(config))
    stdout = run([sys.executable, str(EXAMPLES / "run_npo.py"), "--config", str(tmp_path / "npo.yaml")], tmp_path)
    assert "answer NLL" in stdout and "merged model saved" in stdout
    assert (out / "adapter_model.safetensors").is_file() and (out / "unlearning_record.json").is_file()
    # the memorised model it built is saved, and is the adapter's base model: `hf-unlearn merge` needs no --base
    assert (out / "base_model" / "model.safetensors").is_file() and (out / "base_model" / "tokenizer.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(out / "base_model")
    card = (merged / "README.md").read_text()
    assert "| lume/task_score |" in card and "| mia/auc |" in card and "- unlearning" in card
    assert (merged / "model.safetensors").is_file()


def test_run_influence_offline(tmp_path, lume_dir):
    stdout = run([
        sys.executable, str(EXAMPLES / "run_influence.py"), "--dataset", str(lume_dir), "--num_rows", "4",
        "--tiny_memorise_epochs", "3", "--use_peft", "--lora_r", "4", "--lora_target_modules", "all-linear",
        "--learning_rate", "1e-3", "--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none",
        "--save_strategy", "no", "--use_cpu", "--disable_tqdm", "true", "--output_dir", str(tmp_path / "out"),
    ], tmp_path)
    assert "influence step: forget NLL" in stdout and "answer NLL" in stdout
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_custom_forget_loss_example_is_short_and_runs(tmp_path, lume_dir):
    script = EXAMPLES / "custom_forget_loss.py"
    assert len(script.read_text().splitlines()) < 60
    stdout = run([
        sys.executable, str(script), "--dataset", str(lume_dir), "--num_rows", "4", "--tiny_memorise_epochs", "3",
        "--max_steps", "3", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no",
        "--use_cpu", "--disable_tqdm", "true", "--output_dir", str(tmp_path / "out"),
    ], tmp_path)
    assert "answer NLL  forget" in stdout and "'flatten'" in stdout


def load_run_npo():
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location("run_npo_under_test", EXAMPLES / "run_npo.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def test_the_offline_tokenizer_holds_no_piece_of_the_forget_strings(tmp_path, lume_rows):
    canaries = ("ZQXJ", "CANARY", "9917", "555-0142")
    forget = [dict(r, output=f"{r['output']} ZQXJ-CANARY call 9917 555-0142") for r in lume_rows["forget_train"]]
    data = tmp_path / "lume"
    data.mkdir()
    for name, rows in (("forget_train", forget), ("retain_train", lume_rows["retain_train"])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    module = load_run_npo()
    script_args = module.ScriptArguments(dataset=str(data), num_rows=4, tiny_memorise_epochs=1)
    forget_rows, retain_rows = module.load_data(script_args)
    _, tokenizer = module.load_model(script_args, ModelConfig(), forget_rows, retain_rows, str(tmp_path / "out"))
    # the saved base model (what `hf-unlearn merge` loads) holds no piece of them either, bar its weights
    saved = [p for p in (tmp_path / "out" / "base_model").iterdir() if p.suffix != ".safetensors"]
    assert {p.name for p in saved} >= {"config.json", "tokenizer.json", "tokenizer_config.json"}
    for canary in canaries:
        assert not [p.name for p in saved if canary in p.read_text()], canary
    vocabulary = list(tokenizer.get_vocab())
    assert len(vocabulary) > 1000  # trained on the whole retain split, not only 4 rows
    for canary in canaries:
        assert not [token for token in vocabulary if canary in token], canary
    # A forget string is still encoded (byte-level pieces), so the target can memorise it.
    assert tokenizer.decode(tokenizer(forget_rows[0]["output"])["input_ids"]) == forget_rows[0]["output"]


@pytest.mark.parametrize("output_dir", [None, "given"])
def test_run_npo_without_model_and_dataset_runs_the_demo(output_dir, tmp_path, monkeypatch):
    """The default invocation hands over to hf_unlearn.support.demo.run_demo (itself tested with the demo)."""
    from transformers import TrainingArguments
    from trl import ModelConfig

    from hf_unlearn import UnlearningConfig
    from hf_unlearn.support import demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: calls.append(kwargs) or {})
    module = load_run_npo()
    kwargs = {"output_dir": str(tmp_path / output_dir)} if output_dir else {}
    monkeypatch.chdir(tmp_path)
    args = UnlearningConfig(report_to="none", use_cpu=True, **kwargs)
    assert TrainingArguments.__dataclass_fields__["output_dir"].default is None  # so "not given" is detectable
    module.main(module.ScriptArguments(), args, ModelConfig())
    assert calls == [{"output_dir": str(tmp_path / output_dir) if output_dir else None}]


def test_accelerate_configs_load_and_multi_cpu_starts_two_processes(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"single_gpu.yaml", "multi_gpu.yaml", "multi_cpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml",
            "fsdp.yaml"} <= names
    for name in names:
        config = load_config_from_file(str(CONFIGS / name))
        assert config.num_processes >= 1, name
    assert load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml")).deepspeed_config["zero_stage"] == 3
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "multi_cpu.yaml"),
                "--main_process_port", "29571"]
    run(launcher + [str(REPO_ROOT / "tests" / "scripts" / "print_ranks.py"), str(tmp_path)], tmp_path,
        env={"ACCELERATE_USE_CPU": "1"}, timeout=180)
    ranks = sorted(p.name for p in tmp_path.glob("rank*"))
    assert ranks == ["rank0", "rank1"]
    for rank in ranks:  # one gloo group of two, on the CPU
        processes, kind, device = (tmp_path / rank).read_text().split()
        assert (processes, kind.split(".")[-1], device.split(":")[0]) == ("2", "MULTI_CPU", "cpu")
