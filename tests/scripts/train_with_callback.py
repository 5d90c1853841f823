"""Launched by tests (1 or 2 processes): a short NPO run with the LUME callback; each rank dumps its log history.

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/scripts/train_with_callback.py MODEL_DIR DATA_DIR OUT_DIR BATCH
"""

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import UnlearningConfig, UnlearningTrainer
from hf_unlearn.callbacks import LumeEvaluationCallback
from hf_unlearn.data import read_jsonl


def main(model_dir: str, data_dir: str, out_dir: str, batch_size: str = "2") -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    data = Path(data_dir)
    forget, retain = read_jsonl(data / "forget_validation.jsonl"), read_jsonl(data / "retain_validation.jsonl")
    members = [r["document"] for r in read_jsonl(data / "mia" / "member.jsonl")]
    nonmembers = [r["document"] for r in read_jsonl(data / "mia" / "nonmember.jsonl")]
    config = UnlearningConfig(
        output_dir=out_dir, max_steps=2, per_device_train_batch_size=int(batch_size), learning_rate=1e-2, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, retain_kl_weight=0.5,
    )
    trainer = UnlearningTrainer(
        model=model, args=config, forget_dataset=Dataset.from_list(forget), retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    trainer.add_callback(
        # 7 rows: an uneven split across 2 processes
        LumeEvaluationCallback(trainer, forget_rows=forget[:7], retain_rows=retain[:7], mia_members=members,
                               mia_nonmembers=nonmembers, every=2, unit="step", max_new_tokens=16, batch_size=4)
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    history = [e for e in trainer.state.log_history if "lume/task_score" in e or "loss" in e]
    Path(out_dir, f"history_rank{rank}_of{trainer.accelerator.num_processes}.json").write_text(json.dumps(history))
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:5])
