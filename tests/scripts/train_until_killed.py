"""Launched by tests: an NPO run that checkpoints every 2 steps; the test SIGKILLs it mid-epoch, then resumes it.

    python tests/scripts/train_until_killed.py MODEL_DIR DATA_DIR OUT_DIR {full,kill,kill-in-save:POINT,resume} \
        {adamw,sophia}

`kill` mode writes OUT_DIR/ready-to-kill after step 5 and then waits, so the test can kill it at a known point
(checkpoint-4 saved, step 5 done and not saved). `kill-in-save:POINT` does the same inside the save of checkpoint-6,
at one of `SAVE_POINTS`. Every mode writes the logged losses of each step it ran.
"""

import io
import json
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainerState

import hf_unlearn.checkpoint
from hf_unlearn import UnlearningConfig, UnlearningTrainer
from hf_unlearn.data import read_jsonl

# Where a save of checkpoint-6 can be killed: after each file group, half-way through writing optimizer.pt, just
# before the staging folder is renamed, and just after (checkpoint-6 then exists and must be complete).
SAVE_POINTS = ("weights", "half-optimizer", "optimizer", "rng", "trainer-state", "before-rename", "after-rename")


class WaitToBeKilled(TrainerCallback):
    def __init__(self, marker: Path):
        self.marker = marker

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            self.marker.write_text("5")
            time.sleep(600)  # the test kills the process here


def hang(marker: Path):
    marker.write_text("ready")
    time.sleep(600)  # the test kills the process here


def hang_in_save(trainer: UnlearningTrainer, point: str, marker: Path) -> None:
    """Patch the save path so that the save of checkpoint-6 hangs at `point`."""
    saving_6 = lambda: trainer.state.global_step == 6  # noqa: E731

    def after(owner, name, when=saving_6):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            if when():
                hang(marker)
            return result
        setattr(owner, name, wrapped)

    if point == "weights":
        after(trainer, "save_model")
    elif point == "optimizer":
        after(trainer, "_save_optimizer_and_scheduler")
    elif point == "rng":
        after(trainer, "_save_rng_state")
    elif point == "trainer-state":
        after(TrainerState, "save_to_json")
    elif point == "after-rename":
        after(hf_unlearn.checkpoint, "publish")
    elif point == "before-rename":
        original = hf_unlearn.checkpoint.publish

        def before(*args):
            if saving_6():
                hang(marker)
            return original(*args)
        hf_unlearn.checkpoint.publish = before
    elif point == "half-optimizer":
        original_save = torch.save

        def half_save(obj, f, *args, **kwargs):
            if saving_6() and str(f).endswith("optimizer.pt"):
                buffer = io.BytesIO()
                original_save(obj, buffer, *args, **kwargs)
                with open(f, "wb") as out:
                    out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                hang(marker)
            return original_save(obj, f, *args, **kwargs)
        torch.save = half_save
    else:
        raise ValueError(f"unknown save point {point!r}; one of {SAVE_POINTS}")


def main(model_dir: str, data_dir: str, out_dir: str, mode: str, optim: str) -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    data = Path(data_dir)
    forget = read_jsonl(data / "forget_validation.jsonl")[:6]  # 3 steps per epoch: checkpoint-4 is mid-epoch
    retain = read_jsonl(data / "retain_validation.jsonl")[:5]  # cycled with its own shuffling
    sophia = dict(unlearn_optim="sophia", unlearn_optim_args={"hessian_interval": 3}) if optim == "sophia" else {}
    config = UnlearningConfig(
        output_dir=out_dir, max_steps=8, per_device_train_batch_size=2, learning_rate=3e-3, logging_steps=1,
        retain_kl_weight=0.5, save_strategy="steps", save_steps=2, report_to="none", use_cpu=True,
        disable_tqdm=True, **sophia,
    )
    trainer = UnlearningTrainer(
        model=model, args=config, forget_dataset=Dataset.from_list(forget), retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    if mode == "kill":
        trainer.add_callback(WaitToBeKilled(Path(out_dir) / "ready-to-kill"))
    if mode.startswith("kill-in-save:"):
        hang_in_save(trainer, mode.split(":", 1)[1], Path(out_dir) / "ready-to-kill")
    trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
    losses = {e["step"]: e for e in trainer.state.log_history if "loss" in e}
    Path(out_dir, f"losses-{mode}.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main(*sys.argv[1:6])
