"""Unlearn a forget set with NPO + LoRA (+ retain NLL + retain KL), or any baseline method, with `UnlearningTrainer`.

With no arguments it runs the embedded offline demo (`hf_unlearn.support.demo.run_demo`: a small OLMo model memorises a
synthetic LUME-like data set, then NPO + LoRA unlearns its forget split, scored by the LUME callbacks every epoch):

    accelerate launch --config_file accelerate_configs/single_process.yaml examples/run_npo.py [--output_dir DIR]
    # or: python examples/run_npo.py, hf-unlearn demo

A real model and the LUME release, scored on the validation split, MIA and MMLU every epoch (GPU and Hub access):

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml examples/run_npo.py \
        --model_name_or_path allenai/OLMo-1B-0724-hf \
        --dataset llmunlearningsemeval2025organization/semeval25-unlearning-dataset-public \
        --use_peft --lora_r 5 --lora_alpha 5 --lora_target_modules all-linear \
        --method npo --beta 0.5 --retain_nll_weight 1 --retain_kl_weight 0.5 \
        --learning_rate 1e-4 --per_device_train_batch_size 4 --num_train_epochs 20 --output_dir olmo1b-npo \
        --eval_data ../shared/data/lume --eval_split validation --mia_dir ../shared/data/lume/mia \
        --mmlu ../shared/data/mmlu --mmlu_limit 10 --eval_every 1 --eval_unit epoch \
        --merge_output olmo1b-npo-merged

Offline on a CPU, with no model to download: with `--dataset` but without `--model_name_or_path` the script builds a
small OLMo-architecture model and a tokenizer trained locally on the retain split (never on forget text, which would
end up in its vocabulary), first makes it memorise `--num_rows` forget and retain rows, saves that memorised model to
OUTPUT_DIR/base_model (the adapter's base model), then unlearns the forget rows and prints the answer NLL of both sets
before and after (forget 0.015 -> 0.992, retain 0.013 -> 0.021; about 3 minutes on a shared 2-core CPU):

    python examples/run_npo.py --dataset ../shared/data/lume --num_rows 16 --use_peft --lora_r 8 --lora_alpha 8 \
        --lora_target_modules all-linear --learning_rate 3e-3 --retain_nll_weight 3 --max_steps 60 \
        --logging_steps 20 --report_to none --output_dir outputs/npo
    hf-unlearn merge --adapter outputs/npo --output outputs/merged      # the base model is outputs/npo/base_model

The same on two CPU processes (data parallel, gloo), on the model saved above; a batch of 4 per process is the run
above's global batch of 8 (forget 0.015 -> 0.970, retain 0.013 -> 0.021):

    ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 accelerate launch --config_file accelerate_configs/multi_cpu.yaml \
        examples/run_npo.py --model_name_or_path outputs/npo/base_model --dataset ../shared/data/lume \
        --num_rows 16 --use_peft --lora_r 8 --lora_alpha 8 --lora_target_modules all-linear --learning_rate 3e-3 \
        --retain_nll_weight 3 --per_device_train_batch_size 4 --max_steps 60 --logging_steps 20 --report_to none \
        --output_dir outputs/npo2

Every option of `UnlearningConfig` (and of `TrainingArguments`), trl's `ModelConfig` (LoRA: `--use_peft --lora_r
...`) and `ScriptArguments` below is a flag: see `--help`; `--config file.yaml` reads them from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# hf_unlearn before torch: importing it sets OpenMP's passive wait policy, read when torch loads (threads.py).
import hf_unlearn  # noqa: F401  isort: skip
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config

from hf_unlearn import UnlearningConfig, UnlearningTrainer, load_lume
from hf_unlearn.quiet import hide_known_noise
from hf_unlearn.threads import configure_threads


@dataclass
class DataArguments:
    """The data and the offline tiny model (what every example reads)."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "LUME folder (forget_train.jsonl, ...) or Hub dataset repo id with the same splits. "
                  "Required, except by run_npo.py, which runs the embedded offline demo when neither --dataset nor "
                  "--model_name_or_path is given."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Which split to unlearn ('train')."})
    num_rows: int | None = field(
        default=None, metadata={"help": "Use only the first N Task2 forget and retain rows (quick runs)."}
    )
    tiny_memorise_epochs: int = field(
        default=60, metadata={"help": "Without --model_name_or_path: epochs to memorise the rows before unlearning."}
    )


@dataclass
class ScriptArguments(DataArguments):
    """Data, the offline tiny model, the LUME callbacks and merging."""

    eval_data: str | None = field(
        default=None, metadata={"help": "LUME folder or Hub id to score with LumeEvaluationCallback (task score)."}
    )
    eval_split: str = field(default="validation", metadata={"help": "Split of --eval_data to score."})
    eval_num_rows: int | None = field(
        default=None, metadata={"help": "Score only the first N forget and N retain rows of --eval_data."}
    )
    mia_dir: str | None = field(
        default=None, metadata={"help": "Folder with member.jsonl and nonmember.jsonl: the MIA scores."}
    )
    mmlu: str | None = field(
        default=None, metadata={"help": "MMLU folder (test.jsonl, dev.jsonl in the cais/mmlu schema): MMLU accuracy."}
    )
    mmlu_limit: float | None = field(default=None, metadata={"help": "At most N MMLU questions per subject."})
    mmlu_subjects: str | None = field(default=None, metadata={"help": "Comma-separated MMLU subjects (default all)."})
    eval_every: int = field(default=1, metadata={"help": "Score every N epochs or steps (--eval_unit)."})
    eval_unit: str = field(default="epoch", metadata={"help": "Unit of --eval_every.", "choices": ["epoch", "step"]})
    eval_max_new_tokens: int = field(default=256, metadata={"help": "Greedy generation length (the task's: 256)."})
    eval_generation_batch_size: int = field(default=16, metadata={"help": "Rows per generation batch."})
    merge_output: str | None = field(
        default=None, metadata={"help": "After training, merge the LoRA adapter and save the merged model here."}
    )
    push_merged_to: str | None = field(
        default=None, metadata={"help": "Hub repo (user/name) to push the merged model to (needs --merge_output)."}
    )


def load_data(script_args: DataArguments):
    forget, retain = load_lume(script_args.dataset, split=script_args.dataset_split)
    if script_args.num_rows:
        forget = forget.filter(lambda r: r.get("task") == "Task2").select(range(script_args.num_rows))
        retain = retain.filter(lambda r: r.get("task") == "Task2").select(range(script_args.num_rows))
    return forget, retain


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


def tiny_target(forget, retain, epochs: int, tokenizer_texts: list[str] | None = None):
    """A small OLMo model that has memorised `forget` and `retain`: the offline stand-in for the task's target.

    Its tokenizer is trained on `tokenizer_texts` (default: the retain rows), never on the forget rows: trained on
    them, its vocabulary would hold pieces of the forget strings (names, numbers), saved and pushed with the model.
    """
    from hf_unlearn.support.tiny import memorise, tiny_causal_lm, train_tokenizer

    texts = tokenizer_texts if tokenizer_texts is not None else [r["input"] + " " + r["output"] for r in retain]
    tokenizer = train_tokenizer(texts, vocab_size=2048)
    model = tiny_causal_lm(tokenizer, arch="olmo", hidden_size=128, num_hidden_layers=4)
    memorise(model, tokenizer, list(forget) + list(retain), epochs=epochs, learning_rate=3e-3)
    return model, tokenizer


def retain_split_texts(script_args: DataArguments) -> list[str]:
    """The whole retain split's texts (not only the `--num_rows` used): what the offline tokenizer is trained on."""
    _, retain = load_lume(script_args.dataset, split=script_args.dataset_split)
    return [r["input"] + " " + r["output"] for r in retain]


def load_model(script_args: DataArguments, model_args: ModelConfig, forget, retain, output_dir: str | None = None):
    """`--model_name_or_path`, else the memorised tiny target: built, saved to `output_dir/base_model` (when given)
    and loaded back from there, so that the adapter names that folder as its base model (`base_model_name_or_path`)
    and `hf-unlearn merge` / `evaluate --adapter` / `audit --original` find it."""
    if model_args.model_name_or_path:
        from hf_unlearn.pretrained import resolve_model_path

        path = resolve_model_path(model_args.model_name_or_path, log=print)  # "smollm2": the offline SmolLM2-135M
        tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            revision=model_args.model_revision,
            dtype=model_args.dtype or "auto",
            attn_implementation=model_args.attn_implementation,
        )
        return model, tokenizer
    if output_dir is None:
        return tiny_target(forget, retain, script_args.tiny_memorise_epochs, retain_split_texts(script_args))
    from accelerate import PartialState

    folder, state = Path(output_dir) / "base_model", PartialState()
    if state.is_main_process:  # built once; every process loads the saved copy
        texts = retain_split_texts(script_args)
        model, tokenizer = tiny_target(forget, retain, script_args.tiny_memorise_epochs, texts)
        model.save_pretrained(folder)  # the memorised target (safetensors) and its tokenizer, trained on no forget text
        tokenizer.save_pretrained(folder)
        print(f"memorised base model saved to {folder}")
    state.wait_for_everyone()
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def add_evaluation(trainer, script_args: ScriptArguments) -> None:
    """Attach a `LumeEvaluationCallback` with whatever LUME parts the flags give (none: no callback)."""
    from hf_unlearn.callbacks import LumeEvaluationCallback
    from hf_unlearn.data import read_jsonl

    parts = {}
    if script_args.eval_data:
        forget, retain = load_lume(script_args.eval_data, split=script_args.eval_split)
        if script_args.eval_num_rows:
            n = script_args.eval_num_rows
            forget, retain = forget.select(range(min(n, len(forget)))), retain.select(range(min(n, len(retain))))
        parts.update(forget_rows=forget, retain_rows=retain)
    if script_args.mia_dir:
        parts["mia_members"] = read_jsonl(Path(script_args.mia_dir) / "member.jsonl")
        parts["mia_nonmembers"] = read_jsonl(Path(script_args.mia_dir) / "nonmember.jsonl")
    if script_args.mmlu:
        limit = script_args.mmlu_limit
        parts["mmlu"] = {"data_dir": script_args.mmlu, "limit": int(limit) if limit and limit >= 1 else limit}
        if script_args.mmlu_subjects:
            parts["mmlu"]["subjects"] = [s.strip() for s in script_args.mmlu_subjects.split(",") if s.strip()]
    if parts:
        trainer.add_callback(
            LumeEvaluationCallback(
                trainer, every=script_args.eval_every, unit=script_args.eval_unit,
                max_new_tokens=script_args.eval_max_new_tokens, batch_size=script_args.eval_generation_batch_size,
                **parts,
            )
        )


def save_and_merge(trainer, script_args: ScriptArguments, output_dir: str) -> None:
    """Save the adapter (with `unlearning_record.json` for `hf-unlearn merge`), then merge it if asked."""
    from hf_unlearn.hub import merge_and_save, save_training_record

    trainer.save_model(output_dir)
    save_training_record(trainer, output_dir)
    if trainer.accelerator.is_main_process:
        print(f"adapter saved to {output_dir}")
    if script_args.merge_output:
        merge_and_save(trainer, script_args.merge_output, push_to_hub=script_args.push_merged_to)
        if trainer.accelerator.is_main_process:
            print(f"merged model saved to {script_args.merge_output}")
    elif script_args.push_merged_to:
        raise SystemExit("--push_merged_to needs --merge_output (the folder that is pushed).")


def run_demo_instead(training_args) -> dict:
    try:
        from hf_unlearn.support.demo import run_demo
    except ImportError as error:
        raise SystemExit(
            f"The embedded demo (hf_unlearn.support.demo) is not available ({error}). Pass --dataset DIR (and optionally "
            "--model_name_or_path) to run on your own data."
        ) from None
    given = training_args.output_dir if training_args.output_dir != "trainer_output" else None
    return run_demo(output_dir=given)


def main(script_args: ScriptArguments, training_args: UnlearningConfig, model_args: ModelConfig) -> None:
    if not script_args.dataset and not model_args.model_name_or_path:
        run_demo_instead(training_args)
        return
    if not script_args.dataset:
        raise SystemExit("--dataset is required with --model_name_or_path (a LUME folder or Hub dataset id).")
    forget, retain = load_data(script_args)
    model, tokenizer = load_model(script_args, model_args, forget, retain, training_args.output_dir)
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
    add_evaluation(trainer, script_args)
    trainer.train()
    report_answer_nll(trainer, tokenizer, forget, retain, before)
    save_and_merge(trainer, script_args, training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # and destroys the process group, so no process hangs at exit


def report_answer_nll(trainer, tokenizer, forget, retain, before: dict[str, float]) -> None:
    """Print the forget and retain answer NLL before and after unlearning (computed on every process: under ZeRO-3 a
    forward pass needs all of them)."""
    after = {"forget": answer_nll(trainer.model, tokenizer, forget), "retain": answer_nll(trainer.model, tokenizer, retain)}
    if trainer.accelerator.is_main_process:
        print("\nanswer NLL    before    after")
        for split in ("forget", "retain"):
            print(f"{split:<10} {before[split]:9.3f} {after[split]:8.3f}")


if __name__ == "__main__":
    hide_known_noise()
    configure_threads()  # one per free core, unless OMP_NUM_THREADS (accelerate launch sets it) says otherwise
    parser = TrlParser((ScriptArguments, UnlearningConfig, ModelConfig))
    main(*parser.parse_args_and_config())
