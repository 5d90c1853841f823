"""Subclass `UnlearningTrainer` with a custom forget term: instead of ascending the forget NLL (unbounded), push the
answer distribution on forget rows towards uniform, KL(uniform || pi) per answer token, and keep gd's retain NLL.

    python examples/custom_forget_loss.py --dataset ../shared/data/lume --num_rows 8 --max_steps 20 --output_dir /tmp/flat

Batching, accumulation, multi-process normalisation, LoRA and logging stay the base trainer's.
"""

import torch
from peft import LoraConfig
from run_npo import ScriptArguments, answer_nll, load_data, tiny_target
from transformers import HfArgumentParser

from hf_unlearn import UnlearningConfig, UnlearningTrainer
from hf_unlearn.losses import IGNORE_INDEX
from hf_unlearn.trainer import FORGET_TOKENS


class FlatteningTrainer(UnlearningTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # method="gd": loss = scale * (-forget_nll + retain_nll_weight * retain_nll); `terms` come with the logits.
        loss, out = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        labels = inputs["forget_labels"][:, 1:]
        logits = out["logits"][: labels.shape[0], : labels.shape[1]].float()
        mask = labels.ne(IGNORE_INDEX)
        whole_step = isinstance(num_items_in_batch, dict)  # in training: normalise over the accumulated batch
        tokens = num_items_in_batch["counts"][FORGET_TOKENS].clamp(min=1) if whole_step else mask.sum().clamp(min=1)
        scale = self.accelerator.num_processes if whole_step else 1
        flatten = -(torch.log_softmax(logits, -1).mean(-1) * mask).sum() / tokens  # KL(uniform || pi) + const
        loss = loss + scale * (out["forget_nll"] + flatten)  # swap gd's -forget_nll for the flattening term
        self.log_metric("flatten", flatten)  # logged next to `loss` as `flatten`
        return (loss, {**out, "flatten": flatten}) if return_outputs else loss


def main(script_args: ScriptArguments, training_args: UnlearningConfig) -> None:
    forget, retain = load_data(script_args)
    model, tokenizer = tiny_target(forget, retain, script_args.tiny_memorise_epochs)
    before = answer_nll(model, tokenizer, forget), answer_nll(model, tokenizer, retain)
    trainer = FlatteningTrainer(model=model, args=training_args, forget_dataset=forget, retain_dataset=retain,
                                processing_class=tokenizer, peft_config=LoraConfig(r=8, target_modules="all-linear"))
    trainer.train()
    after = answer_nll(trainer.model, tokenizer, forget), answer_nll(trainer.model, tokenizer, retain)
    print(f"answer NLL  forget {before[0]:.3f} -> {after[0]:.3f}   retain {before[1]:.3f} -> {after[1]:.3f}")


if __name__ == "__main__":
    parser = HfArgumentParser((ScriptArguments, UnlearningConfig))
    parser.set_defaults(method="gd", learning_rate=3e-3, logging_steps=5, report_to="none")
    script_args, training_args = parser.parse_args_into_dataclasses()
    if training_args.method != "gd" or not script_args.dataset:
        parser.error("needs --dataset DIR, and --method gd (the default here: its forget term is the one replaced)")
    main(script_args, training_args)
