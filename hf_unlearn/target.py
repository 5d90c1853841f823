"""The target of a comparison, built from a recipe: a base model fine-tuned on rows until it regurgitates them.

An unlearning benchmark needs a model that *knows* the forget set (the LUME organisers fine-tuned OLMo on their data;
TOFU fine-tunes on its fictitious authors), and the privacy numbers researchers report (TOFU's forget quality, MUSE's
PrivLeak) are relative to a *retain model*: the same recipe without the forget set. `TargetRecipe` says how; an
experiment file's `target:` section is one (see `hf_unlearn.compare`):

    target:
      base: smollm2                 # what `hf-unlearn unlearn --model` takes
      memorise: [forget, retain]    # data: names, or files (relative to the experiment file)
      lora_r: 32                    # 0: fine-tune every weight (a small model built from a config)
      learning_rate: 1.0e-3
      epochs: 20
      retain_model: true            # also the same recipe without data.forget
      anchor: [general.jsonl]       # optional: general text the model is held to (KL to the base model) meanwhile
      then: [{epochs: 8, learning_rate: 2.0e-3}]   # optional: more stages, each a new adapter on the merged last

or a small model built from a config, its byte-level BPE tokenizer trained on the data (a model that knows nothing
but what it memorises, in minutes on a CPU):

    target:
      base: tiny
      tiny: {hidden_size: 128, num_hidden_layers: 4, num_attention_heads: 4, vocab_size: 2048}
      tokenizer_corpus: [../data/lume/forget_train.jsonl, ...]   # optional: default the memorised files
      lora_r: 0                     # every weight

`build_target` memorises with `hf_unlearn.support.tiny.memorise` (loss on every token; whole documents for plain
documents, prompt + answer for rows) and caches the merged model under the cache root, keyed by the recipe and the
contents of the files it memorised: a second comparison over the same recipe loads it, a changed file rebuilds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD = "target.json"
VERSION = 1


@dataclass
class TargetRecipe:
    """How the target is made (each field is a key of an experiment's `target:` section).

    Parameters:
        base: the model that memorises (a Hub id, a local folder, or `smollm2`).
        memorise: what it memorises: names under the experiment's `data:` (`forget`, `retain`, ...), files, or
            slices of files (`{file: X.jsonl, rows: N, skip: M}`, written out by `compare`).
        lora_r: rank (= alpha) of the LoRA adapter on every linear layer that learns the rows and is then merged;
            0 fine-tunes every weight.
        learning_rate: AdamW learning rate (cosine schedule with `warmup_ratio` warm-up).
        epochs: at most this many passes over the rows.
        batch_size: rows per step (batched by length).
        stop_loss: stop after the first epoch whose mean token loss is below this (None: run every epoch).
        max_length: longest row in tokens.
        warmup_ratio: share of the steps that warm the learning rate up.
        seed: seed of the adapter's initialisation and of the batch order.
        retain_model: also build the retain model, the same recipe without `data.forget` (the reference of TOFU's
            forget quality and of PrivLeak).
        anchor: general text (data names or files: documents, or question/answer rows, which become a user and an
            assistant turn of the tokenizer's chat template where it has one) on which each step also minimises
            `anchor_weight` times KL(model || the model before this stage): memorising through LoRA alone costs a
            small model much of its general ability, which an unlearning benchmark then mistakes for damage.
        anchor_weight: weight of that KL term.
        then: further stages, each `{epochs, learning_rate}` (`stop_loss`, `batch_size` as above): a new adapter on
            the merged model of the stage before, seeded `seed + stage` (a second stage reaches a lower loss than more
            epochs of the first under its cosine schedule).
        tiny: with `base: tiny`, the size of the model built from a config (`TINY_DEFAULTS`: `arch` olmo or llama,
            `hidden_size`, `num_hidden_layers`, `num_attention_heads`, `vocab_size`), initialised with `seed`.
        tokenizer_corpus: with `base: tiny`, the data names or files whose text trains its tokenizer (a row is its
            input, a space and its output); default: the files it memorises.
        lr_scheduler: the learning-rate schedule of every stage (a `transformers.get_scheduler` name).
        group_by_length: batch rows of similar length (False: rows in a shuffled order as they come).
    """

    base: str
    memorise: list[Any] = field(default_factory=lambda: ["forget", "retain"])
    lora_r: int = 32
    learning_rate: float = 1e-3
    epochs: int = 20
    batch_size: int = 8
    stop_loss: float | None = 0.05
    max_length: int = 512
    warmup_ratio: float = 0.05
    seed: int = 0
    retain_model: bool = False
    anchor: list[Any] = field(default_factory=list)
    anchor_weight: float = 1.0
    then: list[dict[str, float]] = field(default_factory=list)
    tiny: dict[str, Any] = field(default_factory=dict)
    tokenizer_corpus: list[Any] = field(default_factory=list)
    lr_scheduler: str = "cosine"
    group_by_length: bool = True


# `base: tiny`: the model's size, each a `hf_unlearn.support.tiny.tiny_causal_lm` argument (`vocab_size`: the
# tokenizer's), at these defaults where the `tiny:` mapping leaves one out.
TINY_DEFAULTS = {"arch": "olmo", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "vocab_size": 2048}
# New fields at these values key a recipe as before they existed, so cached targets stay found.
KEY_DEFAULTS = {"tiny": {}, "tokenizer_corpus": [], "lr_scheduler": "cosine", "group_by_length": True}


def parse_recipe(raw: Any, source: str) -> TargetRecipe:
    """A `target:` section as a `TargetRecipe`, every error naming the field (before anything is built)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: target: a mapping with base: (and memorise:, lora_r:, ...)")
    fields = {f.name: f for f in dataclasses.fields(TargetRecipe)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{source}: target: unknown field(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    if not raw.get("base"):
        raise ValueError(f"{source}: target.base: missing (the model that memorises the rows)")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"{source}: target.{name}"
        if name in ("memorise", "anchor", "tokenizer_corpus"):
            if not isinstance(value, list) or (name == "memorise" and not value) or not all(
                    (isinstance(v, str) and v) or isinstance(v, Mapping) for v in value):
                raise ValueError(f"{where}: a {'non-empty ' if name == 'memorise' else ''}list of data names or files "
                                 "(or {file: FILE.jsonl, rows: N, skip: M}), e.g. [forget, retain]")
            from .data.slices import parse_slice

            value = [v if isinstance(v, str) else parse_slice(v, f"{where}[{i}]") for i, v in enumerate(value)]
        elif name in ("lora_r", "epochs", "batch_size", "max_length", "seed"):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name in ("lora_r", "seed")
                                                                                 else 1):
                raise ValueError(f"{where}: must be an integer >= {0 if name in ('lora_r', 'seed') else 1}")
        elif name in ("learning_rate", "warmup_ratio", "stop_loss"):
            if value is None and name == "stop_loss":
                pass
            else:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: must be a number") from None
                if value < 0 or (name == "learning_rate" and value == 0):
                    raise ValueError(f"{where}: must be {'> 0' if name == 'learning_rate' else '>= 0'}")
        elif name in ("retain_model", "group_by_length") and not isinstance(value, bool):
            raise ValueError(f"{where}: must be true or false")
        elif name == "lr_scheduler" and not (isinstance(value, str) and value):
            raise ValueError(f"{where}: a schedule name (cosine, constant, linear, ...)")
        elif name == "tiny":
            if not isinstance(value, Mapping) or set(value) - set(TINY_DEFAULTS):
                raise ValueError(f"{where}: a mapping of {', '.join(TINY_DEFAULTS)}")
            for key, default in TINY_DEFAULTS.items():
                given = value.get(key, default)
                if key == "arch" and given not in ("olmo", "llama"):
                    raise ValueError(f"{where}.arch: olmo or llama")
                if key != "arch" and (isinstance(given, bool) or not isinstance(given, int) or given < 1):
                    raise ValueError(f"{where}.{key}: an integer >= 1")
            value = dict(value)
        elif name == "anchor_weight":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{where}: must be a number >= 0")
            value = float(value)
        elif name == "then":
            if not isinstance(value, list) or not all(isinstance(v, Mapping) and set(v) == {"epochs", "learning_rate"}
                                                      for v in value):
                raise ValueError(f"{where}: a list of stages, each {{epochs: N, learning_rate: X}}")
            for i, stage in enumerate(value):
                if isinstance(stage["epochs"], bool) or not isinstance(stage["epochs"], int) or stage["epochs"] < 1:
                    raise ValueError(f"{where}[{i}].epochs: must be an integer >= 1")
                try:
                    if float(stage["learning_rate"]) <= 0:
                        raise ValueError
                except (TypeError, ValueError):
                    raise ValueError(f"{where}[{i}].learning_rate: must be a number > 0") from None
            value = [{"epochs": v["epochs"], "learning_rate": float(v["learning_rate"])} for v in value]
        values[name] = value
    recipe = TargetRecipe(**{**values, "base": str(raw["base"])})
    if (recipe.tiny or recipe.tokenizer_corpus) and recipe.base != "tiny":
        raise ValueError(f"{source}: target.{'tiny' if recipe.tiny else 'tokenizer_corpus'}: only with base: tiny "
                         "(a model built from a config, its tokenizer trained on the data)")
    if recipe.anchor and not recipe.lora_r:
        raise ValueError(f"{source}: target.anchor: the anchor holds a LoRA adapter to the model under it: set "
                         "lora_r > 0")
    return recipe


def recipe_files(recipe: TargetRecipe, data: Mapping[str, str], base_dir: Path, source: str,
                 without: Sequence[str] = (), field_name: str = "memorise") -> list[tuple[str, str]]:
    """(name, path) of each file the recipe memorises (`field_name="anchor"`: of its anchor): a name under `data:`,
    else a path relative to `base_dir`; the names in `without` left out (the retain model's recipe)."""
    files = []
    for item in getattr(recipe, field_name):
        if item in without:
            continue
        path = data.get(item) or str((base_dir / item).resolve())
        if not Path(path).is_file():
            raise FileNotFoundError(f"{source}: target.{field_name}: {item} is neither a file under data: nor a file "
                                    f"({path} does not exist)")
        files.append((item, path))
    if not files and field_name == "memorise":
        raise ValueError(f"{source}: target.memorise: nothing left to memorise"
                         + (f" without {', '.join(without)} (the retain model needs other rows)" if without else ""))
    return files


def write_recipe_slices(recipe: TargetRecipe, folder: Path, source: str) -> None:
    """Write each slice among the recipe's `memorise` and `anchor` entries as a file of its own in `folder` and put
    its path in its place (files are what `recipe_files` and the cache key read)."""
    from .data.slices import write_slice

    for name in ("memorise", "anchor", "tokenizer_corpus"):
        entries = getattr(recipe, name)
        for i, entry in enumerate(entries):
            if not isinstance(entry, str):
                entries[i] = write_slice(entry, Path(folder) / f"{name}{i}.jsonl", f"{source}: target.{name}[{i}]")


def anchor_rows(files: Sequence[tuple[str, str]], tokenizer) -> list[str]:
    """The anchor's texts: each document of a document file, each question/answer row as a user and an assistant turn
    of the tokenizer's chat template (TOFU's plain `Question: ...\nAnswer: ...` where it has none)."""
    from .data.documents import question_prompt, read_documents
    from .data.lume import _read_jsonl_lines

    out: list[str] = []
    for _, path in files:
        lines = _read_jsonl_lines(Path(path)) if path.endswith(".jsonl") else []
        if lines and all("question" in row and "answer" in row for _, row in lines):
            for _, row in lines:
                if getattr(tokenizer, "chat_template", None):
                    out.append(tokenizer.apply_chat_template([{"role": "user", "content": row["question"]},
                                                              {"role": "assistant", "content": row["answer"]}],
                                                             tokenize=False))
                else:
                    out.append(question_prompt(row["question"]) + row["answer"])
        else:
            out.extend(read_documents(path)[0])
    return out


def memorisation_rows(files: Sequence[tuple[str, str]]) -> list[str | dict]:
    """What the model memorises from each file: whole documents for plain-document files (the membership attack
    scores whole documents), prompt + answer rows for row files, read as `hf-unlearn unlearn` reads them."""
    from .data.documents import load_rows

    out: list[str | dict] = []
    for name, path in files:
        rows, documents = load_rows(path, name)
        out.extend(documents if rows and "document" in rows[0] else
                   [{"input": r["input"], "output": r["output"]} for r in rows])
    return out


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def target_key(recipe: TargetRecipe, files: Sequence[tuple[str, str]],
               anchor_files: Sequence[tuple[str, str]] = (), tokenizer_files: Sequence[tuple[str, str]] = ()) -> str:
    """The cache key: the recipe (without `retain_model`, which names a second build) and the contents of the files
    memorised and anchored on (not their paths: the same data elsewhere is the same target). A recipe without an
    anchor or later stages (or the fields after them at their defaults) keys as recipes did before those fields existed,
    so their cached targets stay found. A tokenizer's corpus keys in its order (the order trains the tokenizer)."""
    kept = {k: v for k, v in dataclasses.asdict(recipe).items()
            if k not in ("retain_model", "memorise", "anchor", "tokenizer_corpus")
            and not (k in KEY_DEFAULTS and v == KEY_DEFAULTS[k])}
    if not recipe.anchor:
        del kept["anchor_weight"]
    if not recipe.then:
        del kept["then"]
    what = {"version": VERSION, "recipe": kept, "files": sorted(_digest(path) for _, path in files),
            **({"anchor": sorted(_digest(path) for _, path in anchor_files)} if recipe.anchor else {}),
            **({"tokenizer": [_digest(path) for _, path in tokenizer_files]} if tokenizer_files else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def tokenizer_texts(files: Sequence[tuple[str, str]]) -> list[str]:
    """The texts a `base: tiny` tokenizer trains on: each document of a document file, each row's input, a space and
    its output of a row file, in file order."""
    from .data.documents import load_rows

    out: list[str] = []
    for name, path in files:
        rows, documents = load_rows(path, name)
        out.extend(documents if rows and "document" in rows[0] else [r["input"] + " " + r["output"] for r in rows])
    return out


def base_model(recipe: TargetRecipe, tokenizer_files: Sequence[tuple[str, str]]):
    """(model, tokenizer) that memorise: `recipe.base` loaded, or with `base: tiny` built from its config, its
    tokenizer trained on `tokenizer_files`."""
    import torch

    if recipe.base != "tiny":
        from .pretrained import load_model_and_tokenizer

        return load_model_and_tokenizer(recipe.base, dtype=torch.float32)
    from .support.tiny import tiny_causal_lm, train_tokenizer

    size = {**TINY_DEFAULTS, **recipe.tiny}
    tokenizer = train_tokenizer(tokenizer_texts(tokenizer_files), vocab_size=size.pop("vocab_size"))
    return tiny_causal_lm(tokenizer, seed=recipe.seed, **size), tokenizer


def build_target(recipe: TargetRecipe, files: Sequence[tuple[str, str]], role: str = "target",
                 log: Callable[[str], None] = print, anchor_files: Sequence[tuple[str, str]] = (),
                 tokenizer_files: Sequence[tuple[str, str]] = ()) -> tuple[str, dict[str, Any]]:
    """The folder of the model that memorised `files` by `recipe` (built and cached, or found in the cache) and its
    record (`role`: "target" or "retain model", for the messages); `anchor_files` are the recipe's anchor
    (`recipe_files(..., field_name="anchor")`), `tokenizer_files` a `base: tiny` tokenizer's corpus (default:
    `files`)."""
    from .cache import cache_root, save_cached

    if recipe.anchor and not recipe.lora_r:
        raise ValueError("target.anchor: the anchor holds a LoRA adapter to the model under it: set lora_r > 0")
    if recipe.base == "tiny" and not tokenizer_files:
        tokenizer_files = files
    folder = cache_root() / "targets" / target_key(recipe, files, anchor_files,
                                                   tokenizer_files if recipe.base == "tiny" else ())
    if (folder / RECORD).is_file():  # written last: a complete save
        record = json.loads((folder / RECORD).read_text())
        log(f"[target] the {role} is cached: {folder}")
        return str(folder), record
    import torch
    from peft import LoraConfig, get_peft_model

    from .quiet import peft_wrapping
    from .support.tiny import memorise

    rows = memorisation_rows(files)
    model, tokenizer = base_model(recipe, tokenizer_files)
    anchor = anchor_rows(anchor_files, tokenizer) if recipe.anchor else None
    stages = [{"epochs": recipe.epochs, "learning_rate": recipe.learning_rate}] + list(recipe.then)
    log(f"[target] building the {role}: {recipe.base} memorises {len(rows)} rows of "
        f"{', '.join(name for name, _ in files)} (at most {' + '.join(str(st['epochs']) for st in stages)} epochs"
        + (f"; held to the base on {len(anchor)} anchor texts" if anchor else "") + ")")
    start = time.perf_counter()
    losses: list[float] = []
    stage_epochs = []
    for i, stage in enumerate(stages):  # each stage a new adapter on the merged model of the one before
        torch.manual_seed(recipe.seed + i)
        if recipe.lora_r:
            with peft_wrapping():
                model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=recipe.lora_r,
                                                         lora_alpha=recipe.lora_r, target_modules="all-linear"))
        mine = memorise(model, tokenizer, rows, epochs=stage["epochs"], learning_rate=stage["learning_rate"],
                        batch_size=recipe.batch_size, max_length=recipe.max_length, seed=recipe.seed + i,
                        lr_scheduler=recipe.lr_scheduler, warmup_ratio=recipe.warmup_ratio, progress=True,
                        group_by_length=recipe.group_by_length,
                        stop_loss=recipe.stop_loss, anchor=anchor, anchor_weight=recipe.anchor_weight)
        losses += mine
        stage_epochs.append(len(mine))
        if recipe.lora_r:
            model = model.merge_and_unload()
    seconds = time.perf_counter() - start
    log(f"[target] {role} built in {seconds:.0f} s: mean loss {losses[0]:.3f} -> {losses[-1]:.4f} over "
        f"{len(losses)} epochs")
    record = {"role": role, "recipe": dataclasses.asdict(recipe), "memorised": [name for name, _ in files],
              "rows": len(rows), "losses": losses, "stage_epochs": stage_epochs, "seconds": seconds}
    save_cached(model, tokenizer, record, folder, RECORD)
    return str(folder), record
