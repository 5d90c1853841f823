"""Launched by tests (1 or 2 processes): the first two optimisation steps of every registered method, and of the
chunked schedule, under DeepSpeed ZeRO-`STAGE` (0: no DeepSpeed); rank 0 writes each one's logged
loss terms of the first step and the loss of the second (the first update), and the error of each configuration
that is refused there (LIBU's influence step).

    torchrun --nproc_per_node 2 tests/scripts/every_method_zero.py MODEL DATA OUT BATCH STAGE [NAMES]

NAMES, comma-separated, runs only those (the two-node test runs "npo").

One launch runs them all, one trainer after another, so the launch and DeepSpeed's start are paid once. With STAGE 0
set ACCELERATE_USE_CPU=1; with ZeRO leave it unset (see train_deepspeed.py).
"""

import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import InfluenceUnlearningConfig, InfluenceUnlearningTrainer, UnlearningConfig, UnlearningTrainer
from hf_unlearn.data import read_jsonl
from hf_unlearn.methods import METHOD_REGISTRY, rmu_lora_config
from hf_unlearn.support.tiny import tiny_causal_lm

from train_deepspeed import deepspeed_config, gloo_state  # noqa: E402  (tests/scripts is the script's own folder)

# Per method: extra config fields and what else the trainer reads. Each registered method appears; a new one that is
# not listed here fails the test (the check in test_deepspeed.py), so it cannot skip this run.
SETTINGS = {
    "npo": {"retain_kl_weight": 0.5},
    "ga": {},
    "gd": {},
    "kl": {"retain_kl_weight": 1.0},
    "simnpo": {},
    "undial": {},
    "wga": {},
    "satimp": {},
    "rmu": {"rmu_layer": 1},  # hidden states of decoder layer 1, the policy's and the reference's
    "anchored": {"forget_unit": "documents", "anchor_hold": "kl", "anchor_calibration_batch": 2},
    "pre_finetuning_distill": {"forget_unit": "documents", "level_weight": 1.0, "hold_weight": 1.0, "hold_batch": 2},
    "chunked": {"method": "gd", "forget_chunk_size": 4, "retain_per_forget": 1, "chunk_restart_optimizer": False},
}


def main(model_dir: str, data_dir: str, out_dir: str, batch_size: str, stage: str, names: str = "") -> None:
    stage = int(stage)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = Path(data_dir)
    forget, retain = read_jsonl(data / "forget_validation.jsonl"), read_jsonl(data / "retain_validation.jsonl")
    calibration = [r["document"] for r in read_jsonl(data / "mia" / "nonmember.jsonl")]
    common = gloo_state() if stage else {}  # one gloo process group for every trainer below
    results = {"registered": sorted(METHOD_REGISTRY)}
    for name, settings in [*SETTINGS.items(), ("libu", {})]:
        if names and name not in names.split(","):
            continue
        settings = dict(settings)
        method = settings.pop("method", name)
        config_cls = InfluenceUnlearningConfig if name == "libu" else UnlearningConfig
        config = config_cls(
            output_dir=str(Path(out_dir, name)), max_steps=2, per_device_train_batch_size=int(batch_size),
            learning_rate=1e-2, logging_steps=1, report_to="none", save_strategy="no", use_cpu=not stage,
            disable_tqdm=True, seed=0, deepspeed=deepspeed_config(stage) if stage else None,
            **({} if name == "libu" else {"method": method}), **common, **settings,
        )
        # Under ZeRO-3 the model is loaded after its config exists, so from_pretrained partitions it.
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        peft_config = (rmu_lora_config(1, r=4, lora_alpha=8) if method == "rmu"
                       else LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        extra = {}
        if method in ("anchored", "pre_finetuning_distill"):
            extra["calibration_dataset"] = Dataset.from_dict({"text": calibration})
        if method == "pre_finetuning_distill":
            extra["pre_finetuning_model"] = tiny_causal_lm(tokenizer, hidden_size=64, num_hidden_layers=2, seed=1)
        trainer_cls = InfluenceUnlearningTrainer if name == "libu" else UnlearningTrainer
        try:
            trainer = trainer_cls(model=model, args=config, forget_dataset=Dataset.from_list(forget),
                                  retain_dataset=Dataset.from_list(retain), processing_class=tokenizer,
                                  peft_config=peft_config, **extra)
        except ValueError as error:  # refused before training
            results[name] = {"refused": str(error)}
            continue
        trainer.train()
        # the first step's terms, and the second step's loss: it shows the first update was the same
        first, second = [e for e in trainer.state.log_history if "loss" in e][:2]
        results[name] = {key: value for key, value in first.items() if isinstance(value, float)}
        results[name]["second_loss"] = second["loss"]
        results["processes"] = trainer.accelerator.num_processes
        trainer.accelerator.wait_for_everyone()
        if stage:  # the next trainer's accelerator takes its own DeepSpeed plugin
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=False)
        del trainer, model
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out_dir, f"first_steps_z{stage}.json").write_text(json.dumps(results))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:7])
