"""Unlearn a forget set with NPO + LoRA (+ retain NLL + retain KL), or any baseline method, with `UnlearningTrainer`.

A real model and the LUME release (GPU and Hub access):

    accelerate launch examples/run_npo.py \
        --model_name_or_path allenai/OLMo-1B-0724-hf \
        --dataset llmunlearningsemeval2025organization/semeval25-unlearning-dataset-public \
        --use_peft --lora_r 5 --lora_alpha 5 --lora_target_modules all-linear \
        --method npo --beta 0.5 --retain_nll_weight 1 --retain_kl_weight 0.5 \
        --learning_rate 1e-4 --per_device_train_batch_size 4 --num_train_epochs 20 --output_dir olmo1b-npo

Offline on a CPU, with no model to download: without `--model_name_or_path` the script builds a small
OLMo-architecture model and a tokenizer trained locally, first makes it memorise `--num_rows` forget and retain rows,
then unlearns the forget rows and prints the answer NLL of both sets before and after:

    python examples/run_npo.py --dataset ../shared/data/lume --num_rows 16 --max_steps 60 --output_dir /tmp/npo

Every option of `UnlearningConfig` (and of `TrainingArguments`) and trl's `ModelConfig` is a flag: see `--help`;
`--config file.yaml` reads them from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config

from hf_unlearn import UnlearningConfig, UnlearningTrainer, load_lume


@dataclass
class ScriptArguments:
    """Data and the offline tiny model."""

    dataset: str = field(
        default="../shared/data/lume",
        metadata={"help": "LUME folder (forget_train.jsonl, ...) or Hub dataset repo id with the same splits."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Which split to unlearn ('train')."})
    num_rows: int | None = field(
        default=None, metadata={"help": "Use only the first N Task2 forget and retain rows (quick runs)."}
    )
    tiny_memorise_epochs: int = field(
        default=60, metadata={"help": "Without --model_name_or_path: epochs to memorise the rows before unlearning."}
    )


def answer_nll(model, tokenizer, dataset) -> float:
    """Mean token NLL of the answers of `dataset` (prompt masked), the quantity unlearning raises."""
    from hf_unlearn.data import UnlearningCollator, tokenize_dataset
    from hf_unlearn.losses import nll_sum, token_log_probs

    collate = UnlearningCollator(tokenizer.pad_token_id)
    features = tokenize_dataset(dataset, tokenizer, "eval", max_length=512)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(features), 8):
            batch = collate([{"forget": f} for f in features[start : start + 8]])
            device = next(model.parameters()).device
            logits = model(
                input_ids=batch["forget_input_ids"].to(device), attention_mask=batch["forget_attention_mask"].to(device)
            ).logits
            logp, mask = token_log_probs(logits, batch["forget_labels"].to(device))
            total += nll_sum(logp, mask).item()
            count += mask.sum().item()
    return total / max(count, 1)


def tiny_target(forget, retain, epochs: int):
    """A small OLMo model that has memorised `forget` and `retain`: the offline stand-in for the task's target."""
    from hf_unlearn.tiny import memorise, tiny_causal_lm, train_tokenizer

    texts = [r["input"] + " " + r["output"] for r in list(forget) + list(retain)]
    tokenizer = train_tokenizer(texts, vocab_size=2048)
    model = tiny_causal_lm(tokenizer, arch="olmo", hidden_size=128, num_hidden_layers=4)
    memorise(model, tokenizer, list(forget) + list(retain), epochs=epochs, learning_rate=3e-3)
    return model, tokenizer


def main(script_args: ScriptArguments, training_args: UnlearningConfig, model_args: ModelConfig) -> None:
    forget, retain = load_lume(script_args.dataset, split=script_args.dataset_split)
    if script_args.num_rows:
        forget = forget.filter(lambda r: r.get("task") == "Task2").select(range(script_args.num_rows))
        retain = retain.filter(lambda r: r.get("task") == "Task2").select(range(script_args.num_rows))

    if model_args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        model = AutoModelForCausalLM.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            dtype=model_args.dtype or "auto",
            attn_implementation=model_args.attn_implementation,
        )
    else:
        model, tokenizer = tiny_target(forget, retain, script_args.tiny_memorise_epochs)
    peft_config = get_peft_config(model_args)
    if peft_config is None and training_args.needs_reference:
        raise SystemExit(
            f"method={training_args.method!r} needs a reference: pass --use_peft (LoRA; the reference is the model with "
            "its adapter disabled)."
        )

    before = {"forget": answer_nll(model, tokenizer, forget), "retain": answer_nll(model, tokenizer, retain)}
    trainer = UnlearningTrainer(
        model=model,
        args=training_args,
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        after = {"forget": answer_nll(trainer.model, tokenizer, forget), "retain": answer_nll(trainer.model, tokenizer, retain)}
        print("\nanswer NLL    before    after")
        for split in ("forget", "retain"):
            print(f"{split:<10} {before[split]:9.3f} {after[split]:8.3f}")
        print(f"adapter saved to {training_args.output_dir}")


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, UnlearningConfig, ModelConfig))
    main(*parser.parse_args_and_config())
