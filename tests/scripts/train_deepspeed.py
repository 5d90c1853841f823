"""Launched by tests (1 or 2 processes): a short LoRA unlearning run, under DeepSpeed ZeRO-`STAGE` (0: no DeepSpeed),
with the LUME callback; each rank dumps its log history.

    torchrun --nproc_per_node 2 tests/scripts/train_deepspeed.py MODEL DATA OUT BATCH STAGE METHOD MMLU_DIR

The callback generates up to 48 new tokens (several rounds that drop finished rows) on 7 forget and 7 retain rows
(split 4/3), runs the MIA on 9 documents (5/4) and MMLU through lm-eval on a few questions of MMLU_DIR: under ZeRO-3
all of it must keep the two processes' forward passes in step.

With STAGE 0 set ACCELERATE_USE_CPU=1 (plain data parallel on CPU); with ZeRO leave it unset: transformers then picks
the DeepSpeed path, and DeepSpeed finds no GPU and runs on its CPU accelerator (gloo).
"""

import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import UnlearningConfig, UnlearningTrainer
from hf_unlearn.callbacks import LumeEvaluationCallback
from hf_unlearn.data import read_jsonl
from hf_unlearn.evaluation import lume_generations


def deepspeed_config(stage: int) -> dict:
    """fp32 ZeRO on CPU; `"auto"` values are filled in from the TrainingArguments."""
    return {
        # Persistence threshold 0: ZeRO-3 shards even the tiny model's small parameters (by default it keeps any of
        # under 1e5 elements whole on every process, which would be all of them here).
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0,
                              "stage3_gather_16bit_weights_on_model_save": True},
        "zero_allow_untested_optimizer": True,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def gloo_state() -> dict:
    """The training arguments that make DeepSpeed's processes one gloo process group on a machine without GPU.

    accelerate picks no process-group backend for DeepSpeed there and then runs each process alone; a state configured
    here with gloo (and DeepSpeed's own init_distributed) is one process group, which the Trainer then uses.
    """
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    return {"accelerator_config": {"use_configured_state": True}}


def main(model_dir: str, data_dir: str, out_dir: str, batch_size: str, stage: str, method: str, mmlu_dir: str) -> None:
    torch.manual_seed(0)
    stage = int(stage)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = Path(data_dir)
    forget, retain = read_jsonl(data / "forget_validation.jsonl"), read_jsonl(data / "retain_validation.jsonl")
    members = [r["document"] for r in read_jsonl(data / "mia" / "member.jsonl")]
    nonmembers = [r["document"] for r in read_jsonl(data / "mia" / "nonmember.jsonl")]
    kwargs = {"retain_kl_weight": 0.5} if method in ("npo", "kl") else {}
    if stage:
        kwargs.update(gloo_state())
    config = UnlearningConfig(
        output_dir=out_dir, max_steps=3, per_device_train_batch_size=int(batch_size), learning_rate=1e-2,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=not stage, disable_tqdm=True, method=method,
        deepspeed=deepspeed_config(stage) if stage else None, **kwargs,
    )
    # Under ZeRO-3 the model must be loaded after the config exists, so from_pretrained partitions it.
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainer = UnlearningTrainer(
        model=model, args=config, forget_dataset=Dataset.from_list(forget), retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer, peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    mmlu = {"data_dir": mmlu_dir, "subjects": ["anatomy", "astronomy"], "limit": 3, "num_fewshot": 1}
    trainer.add_callback(
        LumeEvaluationCallback(trainer, forget_rows=forget[:7], retain_rows=retain[:7], mia_members=members[:5],
                               mia_nonmembers=nonmembers[:4], mmlu=mmlu, every=3, unit="step", max_new_tokens=48,
                               batch_size=2)
    )
    trainer.train()
    # The new tokens of each forget row after training: shows the generations ran past the first 32-token round.
    generated = lume_generations(trainer.model, tokenizer, forget[:7], max_new_tokens=48, batch_size=2,
                                 accelerator=trainer.accelerator)
    rank = trainer.accelerator.process_index
    history = [e for e in trainer.state.log_history if "lume/task_score" in e or "loss" in e]
    plugin = trainer.accelerator.state.deepspeed_plugin
    base = trainer.accelerator.unwrap_model(trainer.model).get_base_model()
    history.append({
        "zero_stage": plugin.zero_stage if trainer.is_deepspeed_enabled else 0,
        # ZeRO-3 leaves each process an empty placeholder of every parameter (ds_numel holds the real size)
        "partitioned": any(getattr(p, "ds_numel", 0) and p.numel() == 0 for p in base.parameters()),
        "generated_tokens": [len(tokenizer(text)["input_ids"]) for text in generated],
    })
    Path(out_dir, f"history_{method}_z{stage}_rank{rank}_of{trainer.accelerator.num_processes}.json").write_text(
        json.dumps(history)
    )
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:8])
