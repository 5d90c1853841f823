"""Merge an unlearning LoRA adapter into its base model, save it as safetensors with a model card, push it to the Hub.

```python
trainer.train()
folder = merge_and_save(trainer, "olmo1b-npo-merged")            # merged weights + tokenizer + README.md
push_merged_to_hub(folder, "me/olmo1b-npo")                      # one commit of its allow-listed files
```

or, from a saved adapter: `hf-unlearn merge --adapter olmo1b-npo --output olmo1b-npo-merged [--push-to-hub me/repo]`.

Merging computes `W' = W + (lora_alpha / r) * B @ A` for every adapted layer (peft's `merge_and_unload`), so the merged
model gives the adapter model's outputs with plain `AutoModelForCausalLM.from_pretrained`. Only the trained adapter is
merged: a frozen reference adapter (`reference="adapter_copy"`, named `ref_adapter_name`) is dropped.

The model card records the method, its hyperparameters, the base model, the LoRA settings and the scores the LUME
callbacks logged (`lume/*`, `mia/*`, `mmlu/*` in the trainer's log history: the first and the last value), is tagged
`unlearning` and cites the method's paper. It is built only from those numbers and settings: no forget-set text or id
goes into the card or the pushed folder.

A push uploads an allow-list only (`files_to_push`: weights, config, generation config, tokenizer, the card), never
whatever else sits in the folder (generations, TensorBoard runs, evaluation files). `merge_and_save` refuses a
non-empty folder it did not make, and a push refuses a repo that is public unless `private=False` (`--public`):
`create_repo(private=True, exist_ok=True)` alone would leave an existing public repo public.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

# The card's and the record's settings beyond the method's own hyperparameters (which come from the method's
# dataclass, `UnlearningConfig.method_hyperparameters`): settings only, never paths, datasets or row ids.
TRAINING_SETTINGS = (
    "loss_on_prompt",
    "max_length",
    "learning_rate",
    "lr_scheduler_type",
    "weight_decay",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "seed",
    "unlearn_optim",
    "unlearn_optim_args",
    "retain_per_forget",
    "forget_chunk_size",
    "epochs_per_chunk",
    "chunk_restart_optimizer",
    "train_last_layers",
)
SCORE_PREFIXES = ("lume/", "mia/", "mmlu/", "influence/")
RECORD_FILE = "unlearning_record.json"
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".msgpack")
# Written into every folder merge_and_save makes, so that a later merge may overwrite it; never pushed.
MADE_BY_US = ".hf_unlearn_merged"
# What a push uploads (file names at the folder's top level, fnmatch patterns): a loadable model and its card.
PUSH_ALLOW_LIST = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def scores_from_history(log_history: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """`{key: {"first": v0, "final": vN, "step": step of vN}}` for every logged `lume/*`, `mia/*`, `mmlu/*` and
    `influence/*` number."""
    scores: dict[str, dict[str, float]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith(SCORE_PREFIXES) and isinstance(value, (int, float)):
                slot = scores.setdefault(key, {"first": float(value)})
                slot["final"], slot["step"] = float(value), entry.get("step", 0)
    return scores


def _lora_settings(peft_model) -> dict[str, Any]:
    config = peft_model.peft_config[peft_model.active_adapter]
    peft_type = getattr(config, "peft_type", "")
    settings = {"peft_type": str(getattr(peft_type, "value", peft_type))}
    for name in ("r", "lora_alpha", "lora_dropout", "target_modules", "layers_to_transform"):
        if getattr(config, name, None) is not None:  # layers_to_transform: only when restricted (RMU's adapter)
            value = getattr(config, name)
            settings[name] = sorted(value) if isinstance(value, (set, frozenset)) else value
    return _jsonable(settings)


def _base_model_name(model) -> str | None:
    config = getattr(model, "peft_config", None)
    if config:
        name = getattr(next(iter(config.values())), "base_model_name_or_path", None)
        if name:
            return str(name)
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name) if name else None


def run_settings(args) -> dict[str, Any]:
    """The settings a card and a record report: the method and its hyperparameters (from its dataclass), the reference
    when the method uses one, `TRAINING_SETTINGS`, and the fields a config subclass adds (e.g. LIBU's influence step)."""
    from dataclasses import fields

    from .config import UnlearningConfig

    if not isinstance(args, UnlearningConfig):
        return {name: getattr(args, name) for name in ("method", *TRAINING_SETTINGS) if hasattr(args, name)}
    settings = args.method_hyperparameters()
    needs = args.unlearning_method.needs()
    if needs.reference:
        settings["reference"] = args.reference
    if needs.forget_ref_log_probs:
        settings["precompute_ref_log_probs"] = args.precompute_ref_log_probs
    settings.update({name: getattr(args, name) for name in TRAINING_SETTINGS})
    own = {f.name for f in fields(UnlearningConfig)}
    for f in fields(args):  # numbers and flags only: a subclass's string field may be a path
        value = getattr(args, f.name)
        if f.name not in own and f.name not in settings and (value is None or isinstance(value, (int, float, bool))):
            settings[f.name] = value
    return settings


def training_record(trainer=None, args=None, log_history=None, model=None) -> dict[str, Any]:
    """What the card reports: method, hyperparameters, base model, LoRA settings and logged scores.

    From a trainer (its args, model and `state.log_history`), or from `args` / `log_history` / `model` given apart.
    """
    if trainer is not None:
        args = trainer.args if args is None else args
        log_history = trainer.state.log_history if log_history is None else log_history
        model = trainer.accelerator.unwrap_model(trainer.model) if model is None else model
    record: dict[str, Any] = {"method": getattr(args, "method", None), "hyperparameters": {}}
    if args is not None:
        record["hyperparameters"] = {name: _jsonable(value) for name, value in run_settings(args).items()}
        record["trainer"] = type(args).__name__.replace("Config", "Trainer")
    if model is not None:
        record["base_model"] = _base_model_name(model)
        if hasattr(model, "peft_config"):
            record["lora"] = _lora_settings(model)
    record["scores"] = scores_from_history(log_history or [])
    return record


def save_training_record(trainer, output_dir: str | Path) -> Path:
    """Write `unlearning_record.json` (see `training_record`) beside a saved adapter, for `hf-unlearn merge` to read.
    Only the main process writes."""
    path = Path(output_dir) / RECORD_FILE
    if trainer.accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(training_record(trainer), indent=2))
    return path


def read_training_record(adapter_dir: str | Path) -> dict[str, Any]:
    """The record saved beside an adapter (`unlearning_record.json`); scores from its `trainer_state.json` (as in a
    checkpoint folder) when the record has none."""
    folder = Path(adapter_dir)
    record: dict[str, Any] = {}
    if (folder / RECORD_FILE).is_file():
        record = json.loads((folder / RECORD_FILE).read_text())
    if not record.get("scores") and (folder / "trainer_state.json").is_file():
        history = json.loads((folder / "trainer_state.json").read_text()).get("log_history", [])
        record["scores"] = scores_from_history(history)
    return record


def _citation(method: str | None, trainer_name: str | None) -> str | None:
    from .methods import METHOD_REGISTRY

    paper = METHOD_REGISTRY[method].paper if method in METHOD_REGISTRY else None  # from the method's file
    if trainer_name == "InfluenceUnlearningTrainer":
        libu = "Kudelya & Shirnin 2025, LoRA-enhanced influence-based unlearning (LIBU), SemEval-2025 Task 4"
        return libu + (f"; phase 2 objective: {paper}" if paper else "")
    return paper


def card_name(base: str) -> str:
    """How the card names the base model: a Hub id as it is; a local folder by its name only (an absolute path says
    where someone's files are, and means nothing to the card's readers)."""
    if Path(base).is_absolute() or base.startswith(("./", "../", "~")) or Path(base).expanduser().exists():
        return f"{Path(base).expanduser().name} (a local folder)"
    return base


def model_card(record: Mapping[str, Any], base_model: str | None = None) -> str:
    """The README.md of a merged model: YAML metadata (tags, base model) and a body built from `record` only."""
    from huggingface_hub import ModelCardData

    method = record.get("method")
    base = base_model or record.get("base_model")
    tags = ["unlearning", "hf_unlearn"] + ([method] if method else []) + (["lora"] if record.get("lora") else [])
    from .pretrained import looks_like_hub_id

    # a Hub id, not a local folder
    hub_base = base if base and "/" in base and looks_like_hub_id(base) and not Path(base).exists() else None
    metadata = ModelCardData(library_name="transformers", tags=tags, base_model=hub_base, pipeline_tag="text-generation")
    lines = ["---", metadata.to_yaml(), "---", "", f"# {method or 'unlearning'}: a model that was made to forget", ""]
    lines.append(
        "This model is its base model with an unlearning LoRA adapter merged into the weights "
        "(`W' = W + (lora_alpha / r) B A`), trained with hf_unlearn"
        f"'s `{record.get('trainer', 'UnlearningTrainer')}`. It loads with `AutoModelForCausalLM.from_pretrained`."
    )
    lines += ["", f"- Base model: `{card_name(base) if base else 'unknown'}`", f"- Method: `{method or 'unknown'}`"]
    citation = _citation(method, record.get("trainer"))
    if citation:
        lines.append(f"- Paper: {citation}")
    if record.get("lora"):
        lines.append("- LoRA: " + ", ".join(f"{k}={v}" for k, v in record["lora"].items()))
    if record.get("hyperparameters"):
        lines += ["", "## Hyperparameters", "", "| name | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v)} |" for k, v in record["hyperparameters"].items() if v is not None]
    scores = record.get("scores") or {}
    if scores:
        lines += ["", "## Scores logged during training", "", "| metric | first | final (step) |", "|---|---|---|"]
        for key, value in sorted(scores.items()):
            lines.append(f"| {key} | {value['first']:.4f} | {value['final']:.4f} ({value.get('step', '-')}) |")
    else:
        lines += ["", "No evaluation scores were logged during training."]
    audit = record.get("audit")
    if audit:
        lines += ["", "## Audit: does the forgetting hold?", "",
                  f"`hf-unlearn audit` on {audit['rows']['forget']} forget and {audit['rows']['retain']} retain rows "
                  "(the share of the forgotten forget regurgitation that each attack brings back):", ""]
        lines += [f"- {verdict}" for verdict in audit["verdicts"]]
    if citation:
        lines += ["", "## Citation", "", citation]
    return "\n".join(lines) + "\n"


def merge_adapter(peft_model, adapter_name: str | None = None) -> torch.nn.Module:
    """Merge the trained adapter (`adapter_name`, default the active one) into the base weights and return the base
    model; every other adapter (a frozen `"ref"` copy) is deleted first, unmerged. The peft model is changed in place:
    its base weights become the merged ones."""
    from peft import PeftModel

    if not isinstance(peft_model, PeftModel):
        raise TypeError(f"Expected a peft model with a LoRA adapter to merge, got {type(peft_model).__name__}.")
    name = adapter_name or peft_model.active_adapter
    if name not in peft_model.peft_config:
        raise ValueError(f"No adapter named {name!r}; the model has {sorted(peft_model.peft_config)}.")
    peft_model.set_adapter(name)
    for other in [n for n in list(peft_model.peft_config) if n != name]:
        peft_model.delete_adapter(other)
    return peft_model.merge_and_unload(adapter_names=[name])


def merge_and_save(
    trainer_or_model,
    output_dir: str | Path,
    tokenizer=None,
    record: Mapping[str, Any] | None = None,
    push_to_hub: str | None = None,
    private: bool = True,
    token: str | None = None,
    audit: Mapping[str, Any] | str | Path | None = None,
) -> Path:
    """Merge the trained LoRA adapter into the base model and save the merged model (safetensors), the tokenizer and a
    model card in `output_dir`; with `push_to_hub="user/repo"`, push that folder (`push_merged_to_hub`).

    `trainer_or_model` is an [`UnlearningTrainer`] after training (its model, tokenizer, args and log history are
    used; its model is merged in place, so save the adapter first if you want to keep training) or a peft model (then
    give `tokenizer`, and `record` from `training_record(...)` or `read_training_record(adapter_dir)` for the card).
    Under DeepSpeed ZeRO-3 the parameters are sharded: save the adapter with `trainer.save_model()` and merge it in one
    process with `hf-unlearn merge`. Only the main process writes and pushes. Returns the folder.

    `audit` (the results of `hf_unlearn.audit.audit_model`, or the path of an `audit.json`) puts the audit's verdicts
    on the card: scores and plain sentences, no row text.
    """
    from transformers import Trainer

    if isinstance(trainer_or_model, Trainer):
        trainer = trainer_or_model
        if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
            raise ValueError(
                "The parameters are sharded under ZeRO-3: save the adapter with trainer.save_model(DIR), then run "
                "`hf-unlearn merge --adapter DIR --output OUT` in a single process."
            )
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = tokenizer or trainer.processing_class
        record = dict(record) if record is not None else training_record(trainer)
        is_main = trainer.accelerator.is_main_process
    else:
        model = trainer_or_model
        record = dict(record) if record is not None else training_record(model=model)
        is_main = True
    record.setdefault("base_model", _base_model_name(model))
    if audit is not None:
        record["audit"] = audit_summary(audit)
    output = Path(output_dir)
    if not is_main:
        return output
    check_output_folder(output)
    merged = merge_adapter(model)
    # Written into a temporary folder beside `output` and swapped in whole: a failure (a full disk) leaves the
    # earlier merge as it was, and nothing of it (a stray weight file) survives into the new one.
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (staging / MADE_BY_US).touch()
        merged.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(model_card(record))
        unsafe = [p.name for p in staging.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
        if unsafe:
            raise RuntimeError(f"Non-safetensors weight files were written to {output}: {unsafe}")
        replaced = staging.with_name(staging.name + "-old")
        if output.exists():
            os.replace(output, replaced)
        os.replace(staging, output)
        shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if push_to_hub:
        push_merged_to_hub(output, push_to_hub, private=private, token=token)
    return output


def audit_summary(audit: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """What the card keeps of an audit: row counts and the verdicts (refuses a file that is not an audit)."""
    if not isinstance(audit, Mapping):
        path = Path(audit)
        audit = json.loads(path.read_text())
        if not isinstance(audit, Mapping) or audit.get("format") != "hf_unlearn.audit":
            raise ValueError(f"{path} is not an hf-unlearn audit.json")
    return {"rows": dict(audit["rows"]), "verdicts": [p["verdict"] for p in audit["probes"].values()]}


def check_output_folder(folder: str | Path) -> None:
    """Refuse a non-empty `folder` that `merge_and_save` did not make: its other files (generations, logs, a
    checkpoint) would end up beside the merged model, and a user's folder would be overwritten."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MADE_BY_US).is_file():
        raise FileExistsError(
            f"{folder} is not empty and was not made by merge_and_save: choose a new or empty output folder."
        )


def files_to_push(folder: str | Path) -> list[str]:
    """The files of `folder` a push uploads: the top-level files matching `PUSH_ALLOW_LIST`, sorted. Refuses a folder
    without weights or without the card, which would push a model nobody can load or check."""
    from fnmatch import fnmatchcase

    names = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and not p.is_symlink())
    chosen = [n for n in names if any(fnmatchcase(n, pattern) for pattern in PUSH_ALLOW_LIST)]
    # Weight shards only as the saved weights name them: the shards of the index, or none beside a single file.
    index = Path(folder) / "model.safetensors.index.json"
    shards = set(json.loads(index.read_text()).get("weight_map", {}).values()) if index.is_file() else set()
    chosen = [n for n in chosen if not fnmatchcase(n, "model-*-of-*.safetensors") or n in shards]
    if not any(n.endswith(".safetensors") for n in chosen) or "README.md" not in chosen:
        raise FileNotFoundError(f"{folder} has no safetensors weights or no README.md: not a merge_and_save folder.")
    return chosen


def push_merged_to_hub(
    folder: str | Path, repo_id: str, private: bool = True, token: str | None = None, commit_message: str | None = None
) -> str:
    """Create `repo_id` if needed (private unless `private=False`) and upload the allow-listed files of `folder`
    (`files_to_push`) in one commit. With `private=True` (the default) an existing public repo is refused: pass
    `private=False` (`hf-unlearn merge --public`) to push to a public one. Returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    files = files_to_push(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    # create_repo(exist_ok=True) leaves an existing repo as it is: check what it really is before uploading.
    visibility = getattr(api.repo_info(repo_id, repo_type="model"), "private", None)
    if private and visibility is not True:
        raise PermissionError(
            f"The Hub repo {repo_id} is {'public' if visibility is False else 'of unknown visibility'}: refusing to "
            "push an unlearned model to it. Make it private, or pass --public (private=False) to push anyway."
        )
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(folder) / name)) for name in files]
    commit = api.create_commit(
        repo_id=repo_id,
        repo_type="model",
        operations=operations,
        commit_message=commit_message or "Upload model merged by hf_unlearn",
    )
    return str(getattr(commit, "commit_url", commit))
