"""The LUME methods compared on the real LUME data: GA, GD, KL, NPO, NPO + retain NLL + retain KL, LIBU, the newer
registry methods (SimNPO, UNDIAL, WGA, SatImp, RMU) and the task winner's chunked gradient difference (SUGD).

    python benchmarks/lume_methods.py                    # the full comparison (see "Measured" below for the time)
    python benchmarks/lume_methods.py --quick            # a tiny configuration for the tests: about two minutes
    python benchmarks/lume_methods.py --methods npo_nll_kl ga --seeds 0   # a subset of the runs
    python benchmarks/lume_methods.py --resume           # reuse the runs a previous (interrupted) invocation finished
    python benchmarks/lume_methods.py --from-json benchmarks/results/lume_methods.json   # rewrite the report only
    python benchmarks/lume_methods.py --merge benchmarks/results/lume_methods.json       # run only what it lacks

`--merge JSON` takes the runs of an earlier results file (refused unless its settings, methods and seeds aside, its
target model and its scores before unlearning are this invocation's) and runs only the (method, seed) pairs it
lacks, e.g. methods added to `METHODS` since; the report covers both, each run with its own recorded time.

It writes `benchmarks/results/lume_methods.md` (the tables, what was run, how long it took and a reading of the
result), `lume_methods.json` (every scored point of every run: numbers only) and `lume_methods.png` (the scores
across epochs, mean +- std over seeds). `--quick` writes `lume_methods_quick.*` instead, so it never overwrites
the full results. `--output-dir` puts them elsewhere.

What is run
-----------

1. **Data** (`select_subset`): from each of the four LUME splits in `--data` (forget_train, retain_train,
   forget_validation, retain_validation) the first `docs_per_task` (3) documents of each task in file order, with
   all their rows (a document is an id stem: its sentence-completion row `sc1` and its question rows `qa<N>`;
   Task2 documents have five questions, Task1 and Task3 one), except forget_train Task3, which takes the first
   `num_members` (6) documents that are MIA members (`mia/member.jsonl` holds whole forget_train Task3
   documents), so every member that is scored is in the forget set and the AUC has 6 x 6 pairs; as many
   nonmembers (never trained on) come from the start of `mia/nonmember.jsonl`, and the next
   `num_utility_documents` (16) nonmembers are the held-out text of the utility term. The validation documents
   are other documents than the train documents (no shared id stem). Full mode: 36 forget_train rows and 30 rows
   in each other split, about 12k tokens, most of them in the long (~400-token) Task1/Task3 sentence completions.
2. **Target model** (`load_or_build_target`): a byte-level BPE tokenizer trained on the text of all four LUME
   splits (not on the nonmembers) and a small OLMo-architecture model (`hf_unlearn.support.tiny`) that memorises every
   row of the four subsets (input, output and EOS, loss on every token, `hf_unlearn.support.tiny.memorise`), as the LUME
   organisers' target model had memorised all of its data: 40 epochs at AdamW lr 3e-3, then 10 more at 1e-3 with a
   fresh optimizer (batch 8). Measured while sizing it: after the 40 epochs the loss was 0.50 and regurgitation
   only 0.47-0.66; the 10 epochs at 1e-3 took the loss to 0.08 and regurgitation and knowledge to 1.0 on all four
   subsets (10 more made it slightly worse); with batch 4 instead of 8 the same 50 epochs ended at loss 0.59 and
   regurgitation 0.3-0.5. It is cached
   (safetensors + tokenizer) under `$HF_UNLEARN_CACHE/lume_methods/<hash>` (default `~/.cache/hf_unlearn/...`,
   as the demo's cache), keyed by a hash of the data selection, tokenizer, model and memorisation settings, so
   reruns and other seeds skip it.
3. **Unlearning**: each method gets the forget_train subset as forget set and the retain_train subset as retain
   set (never the validation rows), for the same number of epochs, and is scored before the first step and after
   every epoch (`ComparisonCallback`, a `LumeEvaluationCallback` with `at_start=True`). All methods train a LoRA
   adapter (r = alpha = 8, on all linear layers except for RMU and SUGD below; the base weights stay frozen) with
   the same learning rate (3e-3), batch (8 forget + 8 retain rows; SUGD 8 + 24) and a constant schedule, so every
   epoch's point is what a run stopped there would give. The learning rate was tuned a little, on one seed for 3-4
   epochs, the same for every method: at 1e-3 neither GA nor NPO + NLL + KL moved forget regurgitation off 1.0 in 3
   epochs (15 steps); at 3e-3 both unlearned from epoch 2; at 1e-2 GA collapsed the model (held-out perplexity
   x10^4) in 2 epochs. 3e-3 is the top of the range that worked for the demo (../shared/docs/DEMO.md) and leaves the
   dynamics visible over 8 epochs. The methods added later got the same lr, untuned:

   | key | method | trainer and loss |
   |---|---|---|
   | `ga` | GA | `UnlearningTrainer(method="ga")`: minus the forget NLL |
   | `gd` | GD | `method="gd"`, retain NLL weight 1 |
   | `kl` | KL | `method="kl"`, retain KL weight 1 |
   | `npo` | NPO | `method="npo"`, beta 0.5, no retain term |
   | `npo_nll_kl` | NPO+NLL+KL | `method="npo"`, beta 0.5, gamma (retain NLL) 1, delta (retain KL) 0.5 |
   | `libu` | LIBU | `InfluenceUnlearningTrainer`: influence step, then GD with Sophia |
   | `simnpo` | SimNPO | `method="simnpo"`, beta 4.5, delta 0, forget weight 0.125, retain NLL weight 1 |
   | `undial` | UNDIAL | `method="undial"`, beta 10, retain NLL weight 1 |
   | `wga` | WGA | `method="wga"`, beta 1, retain NLL weight 1 |
   | `satimp` | SatImp | `method="satimp"`, beta1 5, beta2 1, retain NLL weight 1 |
   | `rmu` | RMU | `method="rmu"`, layer 2, c = 5 x measured activation norm, alpha 1200; LoRA `rmu_lora_config(2)` |
   | `sugd` | SUGD | `from_preset("sugd-lora")`: GD, chunks of 12, 4 passes each, r 3, retain NLL weight 3 |

   NPO+NLL+KL is the NPO+LoRA paper's 1B setting. LIBU: the influence step (damping 1e-3, influence lr = lr: the
   `libu-*` presets' damping and Sophia settings, with this comparison's lr instead of their 2e-5 to 4e-5), then
   gradient difference (retain NLL weight 1) with Sophia (rho 0.04, Hessian refresh every 10 steps).

   SimNPO, UNDIAL, WGA and SatImp have their method files' default hyperparameters (hf_unlearn/methods/) and the
   retain NLL of weight 1 that README's method table gives them; RMU has its defaults (it has no retain NLL) on
   layer 2 of the 4, and its own LoRA, `rmu_lora_config(2)`: `down_proj` of layers 0, 1 and 2 only, with this
   comparison's rank and alpha (8 and 8, not the function's default alpha 16, so that alpha / r, which scales the
   update like the lr, is every method's).

   SUGD is AILS-NTUA's winning recipe (../shared/docs/METHODS.md), `UnlearningConfig.from_preset("sugd-lora")` with
   these changes, ours: the comparison's lr 3e-3 and batch 8 (the preset's 5e-5 and 16 are for a 7B model); the
   preset's LoRA targets (`sugd_lora_config()`: q, v, up and down projections) with rank and alpha 8 as the others
   (the preset's r 16, alpha 32 would double alpha / r); chunks of 12 forget rows instead of 32, so the 36 forget
   rows make 3 equal chunks (with 32 they make one of 32 and one of 4) and a chunk's 4 passes (the preset's
   `epochs_per_chunk`) are 48 rows, 6 whole steps of 8; and 2 Trainer epochs. Kept from the preset: gradient
   difference with 3 retain rows per forget row (24 a step, cycling through the 30 retain rows) and retain NLL weight
   3 (lambda 1 x r), a fresh optimizer and schedule for each chunk. One Trainer epoch is the whole schedule (each
   chunk unlearned 4 times before the next), so 2 of them give every forget row the 8 passes the other methods
   get (36 steps, the others 40 of which 8 are half steps), and SUGD is scored after each whole schedule: at 4 and
   8 passes, each point a state where every chunk was unlearned (a point inside the schedule would have part of the
   forget set untouched). The winner ran the schedule once; its second run here is our choice, for the equal
   number of passes. Its points are plotted at the passes so far (`forget_passes` of each point).

   GA, GD, KL and NPO are the organisers' baselines, which they ran with full fine-tuning; here they train the
   same LoRA adapter as the others, so the table compares the losses, not full fine-tuning against LoRA. NPO is at
   sequence level (the NPO paper's and LUME's definition) for both NPO rows; answer tokens only carry the loss.
   A seed changes the LoRA initialisation and the data order; the target model is the same for every run.
4. **Scores** (`score_model`, with `hf_unlearn.metrics` through `hf_unlearn.evaluation.evaluate_model`): greedy
   generation capped, per kind of row, at the longest answer of that kind in the subset plus 8 tokens
   (`generation_caps`: 115 and 32 in full mode; LUME's script uses 256 for all, which only lengthens rows that
   already missed their EOS), on the validation subsets (`validation/...`: does forgetting reach forget documents
   the method never saw?) and the train subsets (`train/...`: were the given documents forgotten?), each with its
   LUME task score (harmonic mean of the 12 terms, forget values inverted);
   the MIA score `1 - 2|AUC - 0.5|` of the loss attack on the members against the nonmembers; and, instead of
   MMLU (meaningless for a model this small), a **utility term**: the perplexity of the held-out nonmember
   documents (`utility/ppl`, exp of the mean token NLL over all their tokens), as `utility/score =
   min(1, ppl_target / ppl)` (1: no worse than the target model; 0.5: twice its perplexity). The **final score**
   is `mean(task score, MIA score, utility)`, like LUME's `mean(task, MIA, MMLU)`: `final/train` with the train
   task score, `final/validation` with the validation one. Means and sample standard deviations over the seeds.

Nothing here writes forget-set text: the logs and result files hold numbers, settings and method names only.

Measured
--------

The first six methods (defaults, 2026-12-01, 1 thread on the shared 2-core machine): 41 min in all (memorisation
408 s, loss 6.85 -> 0.078, regurgitation and knowledge 1.0 on all four subsets before unlearning; 18 runs of 63-150
s). The six added later (2026-12-02, `--merge benchmarks/results/lume_methods.json --resume`, the machine busier
with other jobs): the target rebuilt from the empty cache in 994 s to the same model (loss 6.848 -> 0.0776, the
same scores before unlearning to the last digit), then 65 min for the 18 new runs of 148-288 s (SimNPO 257 s,
UNDIAL 268, WGA 238, SatImp 219, RMU 156, SUGD 238 per run; one SUGD run, from the check run before, reused), 82
min with the target. Last epoch, mean ± std over 3 seeds (benchmarks/results/lume_methods.md has every column):

    method       final (train)   final (val)     task (train)    MIA score       utility
    GA           0.272 ± 0.039   0.272 ± 0.039   0.000 ± 0.000   0.815 ± 0.116   0.000 ± 0.000
    GD           0.139 ± 0.022   0.139 ± 0.022   0.000 ± 0.000   0.000 ± 0.000   0.418 ± 0.066
    KL           0.466 ± 0.038   0.218 ± 0.014   0.744 ± 0.112   0.000 ± 0.000   0.653 ± 0.042
    NPO          0.107 ± 0.007   0.107 ± 0.007   0.000 ± 0.000   0.000 ± 0.000   0.322 ± 0.022
    NPO+NLL+KL   0.611 ± 0.015   0.328 ± 0.004   0.847 ± 0.051   0.000 ± 0.000   0.984 ± 0.011
    LIBU         0.264 ± 0.037   0.264 ± 0.037   0.000 ± 0.000   0.741 ± 0.085   0.052 ± 0.025
    SimNPO       0.602 ± 0.015   0.349 ± 0.027   0.806 ± 0.046   0.000 ± 0.000   1.000 ± 0.000
    UNDIAL       0.626 ± 0.020   0.381 ± 0.082   0.877 ± 0.060   0.000 ± 0.000   1.000 ± 0.000
    WGA          0.610 ± 0.015   0.295 ± 0.012   0.946 ± 0.012   0.000 ± 0.000   0.884 ± 0.035
    SatImp       0.390 ± 0.099   0.333 ± 0.001   0.174 ± 0.301   0.000 ± 0.000   0.998 ± 0.004
    RMU          0.333 ± 0.000   0.333 ± 0.000   0.000 ± 0.000   0.000 ± 0.000   1.000 ± 0.000
    SUGD         0.409 ± 0.131   0.333 ± 0.000   0.226 ± 0.392   0.000 ± 0.000   1.000 ± 0.000

No method wins clearly. On the train final score UNDIAL is first (0.626 ± 0.020) but NPO+NLL+KL, WGA and SimNPO are
within the two standard deviations together of it; those four are far ahead of the rest. NPO + retain NLL + KL
still beats the organisers' baselines by more than the two standard deviations together and is the most stable of
the methods that peaked before the last epoch (0.004 below its best epoch): the NPO+LoRA paper's claim holds at
this scale against the baselines; it is not ahead of UNDIAL, WGA or SimNPO. On the validation documents UNDIAL's first
place (0.381 ± 0.082) is one seed's (validation task 0.425 in seed 2, 0 in the others): the validation task score
is above 0 in 2 of 36 runs, so no method forgets unseen documents without damage. The task winner's recipe (SUGD,
its LoRA preset with this comparison's lr and 8 passes) under-forgets here: 0.409 ± 0.131, task score 0 in 2 of 3
seeds, utility 1.0; SatImp is still forgetting at the last epoch (likely because its weights p^5 (1 - p) are near
0 on memorised tokens); RMU did not move the model at all (its hidden-state term fell under 1% in 40 steps). The
MIA score is above 0 only where the model broke (GA, LIBU).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from hf_unlearn.callbacks import LumeEvaluationCallback  # noqa: E402
from hf_unlearn.config import PRESETS, describe_lora_targets, sugd_lora_config  # noqa: E402
from hf_unlearn.cache import cache_root  # noqa: E402
from hf_unlearn.evaluation import evaluate_model, flatten_scores, lume_generations  # noqa: E402
from hf_unlearn.metrics import lume_scores_from_generations, row_kind  # noqa: E402
from hf_unlearn.data.lume_subset import SPLITS, TASKS, LumeSubset, document_stem, select_lume_subset  # noqa: E402,F401
from hf_unlearn.data import read_jsonl  # noqa: E402
from hf_unlearn.metrics.general import perplexity  # noqa: E402
from hf_unlearn.metrics.lume import QUESTION_ANSWERING, SENTENCE_COMPLETION  # noqa: E402
from hf_unlearn.methods import rmu_lora_config  # noqa: E402

FORMAT_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "lume"

# The methods: label, trainer ("unlearning" or "influence") and the config fields that define the method.
METHODS: dict[str, dict[str, Any]] = {
    "ga": dict(label="GA", trainer="unlearning", config=dict(method="ga")),
    "gd": dict(label="GD", trainer="unlearning", config=dict(method="gd", retain_nll_weight=1.0)),
    "kl": dict(label="KL", trainer="unlearning", config=dict(method="kl", retain_kl_weight=1.0)),
    "npo": dict(label="NPO", trainer="unlearning",
                config=dict(method="npo", beta=0.5, retain_nll_weight=0.0, retain_kl_weight=0.0)),
    "npo_nll_kl": dict(label="NPO+NLL+KL", trainer="unlearning",
                       config=dict(method="npo", beta=0.5, retain_nll_weight=1.0, retain_kl_weight=0.5)),
    "libu": dict(label="LIBU", trainer="influence",
                 config=dict(method="gd", retain_nll_weight=1.0, damping=1e-3, sophia_rho=0.04, hessian_interval=10,
                             unlearn_optim="sophia")),
    # The registry's newer methods, each with its method file's default hyperparameters and a retain NLL of weight 1.
    "simnpo": dict(label="SimNPO", trainer="unlearning",
                   config=dict(method="simnpo", simnpo_beta=4.5, simnpo_delta=0.0, simnpo_forget_weight=0.125,
                               retain_nll_weight=1.0)),
    "undial": dict(label="UNDIAL", trainer="unlearning",
                   config=dict(method="undial", undial_beta=10.0, retain_nll_weight=1.0)),
    "wga": dict(label="WGA", trainer="unlearning", config=dict(method="wga", wga_beta=1.0, retain_nll_weight=1.0)),
    "satimp": dict(label="SatImp", trainer="unlearning",
                   config=dict(method="satimp", satimp_beta1=5.0, satimp_beta2=1.0, retain_nll_weight=1.0)),
    # RMU on layer 2 of the 4 decoder layers, its LoRA on down_proj of layers 0-2 only (`lora_config`).
    "rmu": dict(label="RMU", trainer="unlearning", lora="rmu",
                config=dict(method="rmu", rmu_layer=2, rmu_steering_coeff=None, rmu_steering_scale=5.0,
                            rmu_alpha=1200.0)),
    # The task winner's chunked gradient difference: the "sugd-lora" preset with this comparison's lr, batch and
    # LoRA rank, and a chunk size for 36 forget rows (see the docstring); one Trainer epoch is the whole schedule.
    "sugd": dict(label="SUGD", trainer="unlearning", lora="sugd", preset="sugd-lora",
                 config=dict(forget_chunk_size=12)),
}
CLAIMED = "npo_nll_kl"  # the NPO+LoRA paper's method, whose claim the comparison checks
BASELINES = ("ga", "gd", "kl", "npo")  # the organisers' baselines, which the claim is about
# The comparison's own settings, the same for every method (a preset's values for them are replaced).
COMMON_FIELDS = ("learning_rate", "per_device_train_batch_size", "num_train_epochs")


def method_config(key: str, methods: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The config fields that define method `key` of `methods` (default `METHODS`): its preset's (without the
    comparison's common lr, batch and epochs), then its entry's `config`."""
    spec = (METHODS if methods is None else methods)[key]
    preset = {k: v for k, v in PRESETS[spec["preset"]].items() if k not in COMMON_FIELDS} if "preset" in spec else {}
    return {**preset, **spec["config"]}


def passes_per_epoch(key: str, methods: dict[str, dict[str, Any]] | None = None) -> int:
    """Passes over each forget row in one Trainer epoch: `epochs_per_chunk` with the chunked schedule (one epoch is
    the whole schedule), else 1."""
    config = method_config(key, methods)
    return config.get("epochs_per_chunk", 1) if config.get("forget_chunk_size") else 1


def trainer_epochs(key: str, settings: Settings, methods: dict[str, dict[str, Any]] | None = None) -> int:
    """Trainer epochs of method `key`: `settings.epochs` passes over the forget set, so `settings.epochs //
    passes_per_epoch` whole schedules for the chunked one (at least one)."""
    return max(1, settings.epochs // passes_per_epoch(key, methods))


def lora_config(key: str, settings: Settings, methods: dict[str, dict[str, Any]] | None = None, *, r: int | None = None,
                lora_alpha: int | None = None, target_modules: str | list[str] = "all-linear"):
    """The LoRA adapter of method `key` of `methods` (default `METHODS`), rank and alpha `r`/`lora_alpha` (default
    `settings.lora_r`/`lora_alpha`): RMU's `rmu_lora_config(rmu_layer)` (down_proj of that layer and the two before
    it); SUGD's `sugd_lora_config()` (q, v, up and down projections); else on `target_modules`."""
    from peft import LoraConfig

    spec = (METHODS if methods is None else methods)[key]
    common = dict(task_type="CAUSAL_LM", r=settings.lora_r if r is None else r,
                  lora_alpha=settings.lora_alpha if lora_alpha is None else lora_alpha)
    kind = spec.get("lora")
    if kind == "rmu":
        return rmu_lora_config(spec["config"]["rmu_layer"], **common)
    if kind == "sugd":
        return sugd_lora_config(**common)
    return LoraConfig(target_modules=target_modules, **common)


@dataclass
class Settings:
    """One configuration of the comparison. The full run's values are the defaults; `quick_settings()` is the test's."""

    docs_per_task: int = field(default=3, metadata={"help": "Documents per task taken from each of the four splits."})
    num_members: int = field(
        default=6, metadata={"help": "forget_train Task3 documents (all MIA members; as many nonmembers are scored)."}
    )
    num_utility_documents: int = field(
        default=16, metadata={"help": "Held-out nonmember documents whose perplexity is the utility term."}
    )
    vocab_size: int = field(default=2048, metadata={"help": "Vocabulary of the BPE tokenizer trained on LUME."})
    hidden_size: int = field(default=128, metadata={"help": "Hidden size of the OLMo target model."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Layers of the OLMo target model."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads of the OLMo target model."})
    memorise_epochs: int = field(default=40, metadata={"help": "Epochs of memorisation of the target model."})
    memorise_learning_rate: float = field(default=3e-3, metadata={"help": "AdamW lr of the memorisation."})
    memorise_final_epochs: int = field(
        default=10, metadata={"help": "Further memorisation epochs at memorise_final_learning_rate (0: none)."}
    )
    memorise_final_learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW lr of the final memorisation epochs (a fresh optimizer)."}
    )
    memorise_batch_size: int = field(default=8, metadata={"help": "Rows per memorisation step."})
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per row (memorisation and unlearning)."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Unlearning lr, the same for every method."})
    epochs: int = field(default=8, metadata={"help": "Unlearning epochs (passes over the forget set), every method."})
    batch_size: int = field(default=8, metadata={"help": "Forget rows (and retain rows) per unlearning step."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (all linear layers)."})
    lora_alpha: int = field(default=8, metadata={"help": "LoRA alpha."})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "Seeds of the unlearning runs."})
    methods: tuple[str, ...] = field(default=tuple(METHODS), metadata={"help": "Methods to run (keys of METHODS)."})
    max_new_tokens: int = field(
        default=0, metadata={"help": "Greedy generation cap; 0: the longest answer of the subset's rows of the same "
                             "kind (sentence completion or question) + 8 tokens."}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Rows per generation batch when scoring."})

    def target_key(self) -> dict[str, Any]:
        """What defines the memorised target model (and so its cache folder)."""
        names = ("docs_per_task", "num_members", "vocab_size", "hidden_size", "num_hidden_layers",
                 "num_attention_heads",
                 "memorise_epochs", "memorise_learning_rate", "memorise_final_epochs",
                 "memorise_final_learning_rate", "memorise_batch_size", "max_length")
        return {"version": FORMAT_VERSION, **{name: getattr(self, name) for name in names}}


QUICK_METHODS = ("npo_nll_kl", "libu", "rmu", "sugd")  # each trainer, LoRA and schedule once, in about two minutes


def quick_settings() -> Settings:
    """A much smaller configuration for the test: mechanics and well-formed outputs, not a result. Four of the methods
    (`QUICK_METHODS`: the reference and retain KL, the influence trainer, RMU's own LoRA, the chunked schedule), so it
    stays about two minutes; 3 layers, so that RMU's layer 2 exists."""
    return Settings(
        docs_per_task=1, num_members=2, num_utility_documents=4, vocab_size=1024, hidden_size=64, num_hidden_layers=3,
        num_attention_heads=2, memorise_epochs=12, memorise_final_epochs=3, memorise_batch_size=8,
        learning_rate=1e-3, epochs=2,
        batch_size=8, seeds=(0, 1), methods=QUICK_METHODS, max_new_tokens=24, max_length=640,
    )


# ---- data --------------------------------------------------------------------------------------------------------


@dataclass
class Subset:
    """The rows, MIA documents and utility documents of one comparison."""

    rows: dict[str, list[dict]]  # the four splits' rows (id, input, output, task)
    members: list[str]
    nonmembers: list[str]
    utility_documents: list[str]

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split, rows in self.rows.items():
            out[split] = {
                "rows": len(rows),
                "documents": len({document_stem(r["id"]) for r in rows}),
                "sc": sum(r["id"][:-1].endswith("sc") for r in rows),
                "qa": sum(r["id"][:-1].endswith("qa") for r in rows),
            }
        out.update(mia_members=len(self.members), mia_nonmembers=len(self.nonmembers),
                   utility_documents=len(self.utility_documents))
        return out


def select_subset(data_dir: Path, docs_per_task: int, num_members: int, num_utility_documents: int) -> Subset:
    """The first `docs_per_task` documents of each task of each split, except forget_train Task3: its first
    `num_members` documents that are MIA members (`hf_unlearn.data.lume_subset`, an experiment's `lume:` section);
    those members and as many nonmembers; and the next `num_utility_documents` nonmembers as held-out utility text."""
    chosen = select_lume_subset(LumeSubset(str(data_dir), docs_per_task, num_members, skip_general=num_members,
                                           general_documents=num_utility_documents))
    nonmembers = [row["document"] for row in read_jsonl(data_dir / "mia" / "nonmember.jsonl")][:num_members]
    return Subset(chosen["rows"], chosen["members"], nonmembers, chosen["general"])


# ---- the memorised target model ----------------------------------------------------------------------------------


def target_cache_dir(settings: Settings, corpus: str = "lume") -> Path:
    key = settings.target_key() if corpus == "lume" else {**settings.target_key(), "corpus": corpus}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "lume_methods" / digest


def load_or_build_target(settings: Settings, subset: Subset, data_dir: Path, log=print, corpus: str = "lume",
                         tokenizer_texts: Sequence[str] | None = None):
    """The memorised target model and its tokenizer, from the cache or built (then cached); and its record. The
    tokenizer is trained on `tokenizer_texts`, by default the text of the four LUME splits in `data_dir`; another
    `corpus` (a name: it keys the cache) gives other subset rows and texts."""
    from hf_unlearn.cache import load_or_build
    from hf_unlearn.support.tiny import memorise, tiny_causal_lm, train_tokenizer

    def build():
        start = time.perf_counter()
        texts = tokenizer_texts if tokenizer_texts is not None else [
            row["input"] + " " + row["output"] for split in SPLITS for row in read_jsonl(data_dir / f"{split}.jsonl")]
        tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
        model = tiny_causal_lm(
            tokenizer, arch="olmo", hidden_size=settings.hidden_size, num_hidden_layers=settings.num_hidden_layers,
            num_attention_heads=settings.num_attention_heads, seed=0,
        )
        rows = [row for split in SPLITS for row in subset.rows[split]]
        n_params = sum(p.numel() for p in model.parameters())
        log(f"[lume_methods] target model: memorising {len(rows)} rows with a {n_params / 1e6:.2f}M-parameter OLMo "
            f"model ({settings.memorise_epochs} + {settings.memorise_final_epochs} epochs)...")
        losses = []
        for stage, (epochs, lr) in enumerate(((settings.memorise_epochs, settings.memorise_learning_rate),
                                              (settings.memorise_final_epochs, settings.memorise_final_learning_rate))):
            if epochs:  # a fresh AdamW at a lower lr for the last epochs: the loss falls from ~0.5 to ~0.08 in 10
                losses += memorise(model, tokenizer, rows, epochs=epochs, learning_rate=lr,
                                   batch_size=settings.memorise_batch_size, max_length=settings.max_length, seed=stage)
        seconds = time.perf_counter() - start
        log(f"[lume_methods] memorised in {seconds:.0f} s (loss {losses[0]:.3f} -> {losses[-1]:.4f})")
        record = {"settings": settings.target_key(), "corpus": corpus, "memorise_seconds": seconds,
                  "memorise_losses": losses, "num_parameters": n_params}
        return model, tokenizer, record

    cache_dir = target_cache_dir(settings, corpus)
    model, tokenizer, info = load_or_build(cache_dir, "target.json", build)
    if info["from_cache"]:
        log(f"[lume_methods] target model: cached in {cache_dir}")
    return model, tokenizer, info


# ---- scoring -------------------------------------------------------------------------------------------------------


def utility_score(ppl_target: float, ppl: float) -> float:
    """The utility term: 1 when the held-out perplexity is no worse than the target model's, else the ratio."""
    return min(1.0, ppl_target / ppl)


def generation_caps(tokenizer, subset: Subset, max_new_tokens: int = 0) -> dict[str, int]:
    """Greedy generation cap per row kind: the longest answer (in tokens) of that kind in the subset + 8, so every
    expected answer and its EOS fit; or `max_new_tokens` for both when it is set."""
    if max_new_tokens:
        return {SENTENCE_COMPLETION: max_new_tokens, QUESTION_ANSWERING: max_new_tokens}
    rows = [row for split in SPLITS for row in subset.rows[split]]
    return {kind: 8 + max((len(tokenizer(row["output"], add_special_tokens=False)["input_ids"]) for row in rows
                           if row_kind(row["id"]) == kind), default=0)
            for kind in (SENTENCE_COMPLETION, QUESTION_ANSWERING)}


def lume_scores(model, tokenizer, forget_rows: list[dict], retain_rows: list[dict], caps: dict[str, int],
                batch_size: int) -> dict[str, Any]:
    """The LUME task score and its terms (`lume_scores_from_generations`), generating each kind of row with its cap."""
    generations = []
    for rows in (forget_rows, retain_rows):
        texts = [""] * len(rows)
        for kind, cap in caps.items():
            index = [i for i, row in enumerate(rows) if row_kind(row["id"]) == kind]
            if index:
                made = lume_generations(model, tokenizer, [rows[i] for i in index], cap, batch_size)
                for i, text in zip(index, made):
                    texts[i] = text
        generations.append(texts)
    return lume_scores_from_generations(forget_rows, generations[0], retain_rows, generations[1])


def score_model(model, tokenizer, subset: Subset, caps: dict[str, int], batch_size: int,
                ppl_target: float | None = None) -> dict[str, float]:
    """Every score of one point: `train/...`, `validation/...` (LUME task scores and their terms), `mia/...`,
    `utility/ppl`, `utility/score`, `final/train`, `final/validation` (see the module docstring)."""
    scores: dict[str, float] = {}
    for name, forget, retain in (("train", "forget_train", "retain_train"),
                                 ("validation", "forget_validation", "retain_validation")):
        results = lume_scores(model, tokenizer, subset.rows[forget], subset.rows[retain], caps, batch_size)
        scores.update({f"{name}/{key[len('lume/'):]}": v for key, v in flatten_scores(results).items()})
    mia = evaluate_model(model, tokenizer, mia_members=subset.members, mia_nonmembers=subset.nonmembers,
                         batch_size=16)
    scores.update({key: v for key, v in flatten_scores(mia).items() if key.startswith("mia/")})
    ppl = perplexity(model, tokenizer, subset.utility_documents)
    scores["utility/ppl"] = ppl
    scores["utility/score"] = utility_score(ppl if ppl_target is None else ppl_target, ppl)
    for name in ("train", "validation"):
        scores[f"final/{name}"] = statistics.mean([scores[f"{name}/task_score"], scores["mia/score"],
                                                   scores["utility/score"]])
    return scores


class ComparisonCallback(LumeEvaluationCallback):
    """`LumeEvaluationCallback` (before the first step, then every epoch) logging `score_model`'s scores: both the
    train and validation subsets, MIA and the utility term, in one log entry per point. The point before the first
    step is the target model itself (a fresh LoRA adapter changes nothing), so its scores are computed once and
    reused by every run (`before`)."""

    def __init__(self, trainer, subset: Subset, max_new_tokens: dict[str, int], batch_size: int, ppl_target: float,
                 before: dict[str, float] | None = None):
        super().__init__(trainer, forget_rows=subset.rows["forget_validation"],
                         retain_rows=subset.rows["retain_validation"], mia_members=subset.members,
                         mia_nonmembers=subset.nonmembers, every=1, unit="epoch", at_start=True,
                         max_new_tokens=max_new_tokens, batch_size=batch_size)
        self.subset, self.ppl_target, self.before = subset, ppl_target, before

    def score(self) -> dict[str, float]:
        if self.trainer.state.global_step == 0 and self.before is not None:
            return dict(self.before)
        return score_model(self.trainer.model, self.trainer.processing_class, self.subset, self.max_new_tokens,
                           self.batch_size, self.ppl_target)


# ---- one unlearning run ----------------------------------------------------------------------------------------------


def build_trainer(key: str, seed: int, settings: Settings, subset: Subset, target_dir: str, work_dir: Path,
                  peft_config=None):
    """The trainer of one method and seed on a fresh copy of the target: forget_train and retain_train subsets,
    the method's LoRA (`peft_config`, default `lora_config(key, settings)`), no printing callbacks."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from hf_unlearn import (InfluenceUnlearningConfig, InfluenceUnlearningTrainer, UnlearningConfig,
                            UnlearningTrainer)

    spec = METHODS[key]
    model = AutoModelForCausalLM.from_pretrained(target_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    config_cls, trainer_cls = ((InfluenceUnlearningConfig, InfluenceUnlearningTrainer) if spec["trainer"] == "influence"
                               else (UnlearningConfig, UnlearningTrainer))
    fields = dict(
        output_dir=str(work_dir / f"{key}-seed{seed}"), seed=seed, data_seed=seed, report_to="none",
        save_strategy="no", logging_steps=5, learning_rate=settings.learning_rate, lr_scheduler_type="constant",
        num_train_epochs=trainer_epochs(key, settings), per_device_train_batch_size=settings.batch_size,
        max_length=settings.max_length, disable_tqdm=True, **spec["config"],
    )
    # A preset's values first, then the comparison's common settings and the entry's own on top.
    config = config_cls.from_preset(spec["preset"], **fields) if "preset" in spec else config_cls(**fields)
    set_seed(seed)  # the LoRA initialisation happens before the Trainer seeds anything
    trainer = trainer_cls(
        model=model, args=config, forget_dataset=Dataset.from_list(subset.rows["forget_train"]),
        retain_dataset=Dataset.from_list(subset.rows["retain_train"]), processing_class=tokenizer,
        peft_config=peft_config if peft_config is not None else lora_config(key, settings),
    )
    for printer in (PrinterCallback, ProgressCallback):  # the scores go to the run's record, not to stdout
        trainer.remove_callback(printer)
    return trainer


def run_method(key: str, seed: int, settings: Settings, subset: Subset, target_dir: str, max_new_tokens: dict,
               ppl_target: float, before: dict[str, float], work_dir: Path) -> dict[str, Any]:
    """Unlearn the forget_train subset from a fresh copy of the target with one method and seed; the scored points."""
    started = time.perf_counter()
    trainer = build_trainer(key, seed, settings, subset, target_dir, work_dir)
    trainer.add_callback(ComparisonCallback(trainer, subset, max_new_tokens, settings.eval_batch_size, ppl_target,
                                            before))
    trainer.train()
    passes = passes_per_epoch(key)  # the x of every point: passes over each forget row so far
    history = [{**entry, "forget_passes": round(entry.get("epoch", 0) * passes)}
               for entry in trainer.state.log_history if "final/train" in entry]
    losses = [{k: v for k, v in entry.items() if isinstance(v, (int, float))}
              for entry in trainer.state.log_history if "loss" in entry or "influence/update_norm" in entry]
    return {"method": key, "seed": seed, "history": history, "train_log": losses,
            "seconds": time.perf_counter() - started}


# ---- the report ------------------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float], digits: int = 3, style: str = "f") -> str:
    """`mean ± std` (sample std) of `values`, `digits` decimals (`style="g"`: significant digits, for perplexities)."""
    m, s = mean_std(values)
    return f"{m:.{digits}{style}} ± {s:.{digits}{style}}" if len(values) > 1 else f"{m:.{digits}{style}}"


HEADLINE = [
    ("final (train)", "final/train"), ("final (val)", "final/validation"), ("task (train)", "train/task_score"),
    ("task (val)", "validation/task_score"), ("MIA score", "mia/score"), ("MIA AUC", "mia/auc"),
    ("utility", "utility/score"), ("held-out ppl", "utility/ppl"),
]
DETAIL = [
    (f"{split} {side} {kind[:5]}.", f"{split}/{side}/{kind}")
    for split in ("train", "validation") for side in ("forget", "retain") for kind in ("regurgitation", "knowledge")
]


def forget_passes(point: dict) -> int:
    """The x of a scored point: passes over each forget row so far (runs recorded before this key: their epoch)."""
    return point.get("forget_passes", round(point.get("epoch", 0)))


def summarise(runs: list[dict], settings: Settings) -> dict[str, dict[str, Any]]:
    """Per method: the final-epoch values of every key over seeds, and the final-score curve over epochs."""
    summary: dict[str, dict[str, Any]] = {}
    for key in settings.methods:
        mine = [run for run in runs if run["method"] == key]
        if not mine:
            continue
        last = [run["history"][-1] for run in mine]
        curves = {k: [[point[k] for point in run["history"]] for run in mine]
                  for k in ("final/train", "final/validation", "train/task_score", "validation/task_score")}
        peak = {}
        for k in ("final/train", "final/validation"):
            peaks = [max(curve) for curve in curves[k]]
            peak[k] = {"peak": peaks, "drop": [max(c) - c[-1] for c in curves[k]],
                       "peak_epoch": [forget_passes(run["history"][c.index(max(c))]) for run, c in
                                      zip(mine, curves[k])]}
        summary[key] = {"seeds": [run["seed"] for run in mine], "last": last, "curves": curves, "peak": peak,
                        "seconds": [run["seconds"] for run in mine]}
    return summary


def table(summary: dict, before: dict[str, float], columns: list[tuple[str, str]], digits: int = 3) -> str:
    lines = ["| method | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    style = {k: (3, "g") if k == "utility/ppl" else (digits, "f") for _, k in columns}
    lines.append("| target (before) | " + " | ".join(
        f"{before[k]:.{style[k][0]}{style[k][1]}}" for _, k in columns) + " |")
    for key, s in summary.items():
        cells = [fmt([point[k] for point in s["last"]], *style[k]) for _, k in columns]
        lines.append(f"| {METHODS[key]['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stability_table(summary: dict) -> str:
    lines = ["| method | final (train): best epoch's | at the last epoch | drop from best | "
             "final (val): best epoch's | at the last epoch | drop from best |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, s in summary.items():
        cells = []
        for k in ("final/train", "final/validation"):
            cells += [fmt(s["peak"][k]["peak"]), fmt([p[k] for p in s["last"]]), fmt(s["peak"][k]["drop"])]
        lines.append(f"| {METHODS[key]['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking(summary: dict, key: str) -> list[tuple[str, float, float]]:
    """(method, mean, std) of `key` at the last point, best first."""
    values = [(k, *mean_std([p[key] for p in s["last"]])) for k, s in summary.items()]
    return sorted(values, key=lambda v: v[1], reverse=True)


def seed_values(summary: dict, key: str, k: str) -> str:
    """The per-seed values of `k` at the last point of method `key`, as "a / b / c"."""
    return " / ".join(f"{p[k]:.3f}" for p in summary[key]["last"])


def reading(summary: dict, before: dict[str, float], runs: Sequence[dict] = ()) -> list[str]:
    """Which method wins on the final score, where the newer methods and SUGD stand, and whether the NPO+LoRA paper's
    claim holds, read off the numbers (written into the results file)."""
    if len(summary) < 2:
        return ["(fewer than two methods were run: no reading)"]
    out = []
    last = {key: {k: mean_std([p[k] for p in s["last"]]) for k in s["last"][0] if isinstance(s["last"][0][k], float)}
            for key, s in summary.items()}
    label = {key: METHODS[key]["label"] for key in summary}
    n = len(summary)
    rank = {}
    for k, name in (("final/train", "train"), ("final/validation", "validation")):
        ranked = ranking(summary, k)
        rank[k] = [key for key, _, _ in ranked]
        w, wm, ws = ranked[0]
        # the methods whose gap to the first is within the two standard deviations together
        tied = [key for key, m, sd in ranked[1:] if wm - m <= ws + sd]
        seeds = len(summary[w]["last"])
        text = (f"- **Final score on the {name} subsets**: first {label[w]}, {wm:.3f} ± {ws:.3f} at the last point "
                f"(seeds {seed_values(summary, w, k)}; the target scores {before[k]:.3f}). ")
        if tied:
            text += (f"It is **not a clear winner**: {', '.join(label[t] for t in tied)} "
                     f"{'is' if len(tied) == 1 else 'are'} within the two standard deviations together of it. ")
        elif seeds > 1:
            text += "It leads the second by more than the two standard deviations together. "
        if k == "final/validation":
            above = [key for key in summary if any(p["validation/task_score"] > 0 for p in summary[key]["last"])]
            pos = sum(p["validation/task_score"] > 0 for key in summary for p in summary[key]["last"])
            total = sum(len(s["last"]) for s in summary.values())
            which = ", ".join(f"{label[key]} {seed_values(summary, key, 'validation/task_score')}" for key in above)
            text += f"The validation task score is above 0 in {pos} of {total} runs ({which or 'none'})"
            if not any(p["final/validation"] > before[k] for s_ in summary.values() for p in s_["last"]
                       if p["validation/task_score"] == 0):
                text += ("; in every other run the validation final score is at most the target's, so there it only "
                         "says which method damaged the model least")
            text += ". "
        text += "All, best first: " + ", ".join(f"{label[key]} {m:.3f} ± {sd:.3f}" for key, m, sd in ranked) + "."
        out.append(text)
    logs = {(run["method"], run["seed"]): run.get("train_log", []) for run in runs}
    new = [key for key in ("sugd", "undial", "simnpo", "wga", "satimp", "rmu") if key in summary]
    for key in new:
        (tm, ts), (vm, vs) = last[key]["final/train"], last[key]["final/validation"]
        text = (f"- **{label[key]}**{' (the task winner' + chr(39) + 's recipe)' if key == 'sugd' else ''}: rank "
                f"{rank['final/train'].index(key) + 1} of {n} on train ({tm:.3f} ± {ts:.3f}; seeds "
                f"{seed_values(summary, key, 'final/train')}), {rank['final/validation'].index(key) + 1} on validation "
                f"({vm:.3f} ± {vs:.3f}); at the last point train task {last[key]['train/task_score'][0]:.3f}, MIA "
                f"{last[key]['mia/score'][0]:.3f}, utility {last[key]['utility/score'][0]:.3f}, forget regurgitation "
                f"{last[key]['train/forget/regurgitation'][0]:.2f} and knowledge "
                f"{last[key]['train/forget/knowledge'][0]:.2f}"
                f" (retain {last[key]['train/retain/regurgitation'][0]:.2f} and "
                f"{last[key]['train/retain/knowledge'][0]:.2f}).")
        zero = sum(p["train/task_score"] == 0 for p in summary[key]["last"])
        if last[key]["train/forget/regurgitation"][0] >= 0.99:
            text += " It did not forget at all"
            terms = [[e["rmu_forget"] for e in logs.get((key, seed), []) if "rmu_forget" in e]
                     for seed in summary[key]["seeds"]]
            if key == "rmu" and all(terms):
                text += (": its forget term (the hidden-state MSE to c·u) fell only "
                         f"{statistics.mean(1 - t[-1] / t[0] for t in terms):.1%} from the first logged steps to the "
                         "last, with this comparison's lr and steps")
            text += "."
        elif zero:
            text += (f" Its train task score is 0 in {zero} of {len(summary[key]['last'])} seeds: a forget term (1 - "
                     "regurgitation or knowledge of one task) or a retain term is still 0 at the last point.")
        curve = summary[key]["curves"]["final/train"]
        if all(c[-1] >= max(c) for c in curve) and last[key]["train/forget/knowledge"][0] > 0.3:
            text += " It was still forgetting at the last point (its best there)."
        if key == "sugd":
            xs = next(([forget_passes(p) for p in run["history"]] for run in runs if run["method"] == key), [])
            text += (" Scored after each whole schedule only"
                     + (f", at {' and '.join(map(str, xs[1:]))} passes over each forget row." if xs else "."))
        out.append(text)
    baselines = [key for key in BASELINES if key in summary]
    if CLAIMED in summary and baselines:
        drops = {key: statistics.mean(s["peak"]["final/train"]["drop"]) for key, s in summary.items()}
        best_base = max(baselines, key=lambda key: last[key]["final/train"][0])
        (cm, cs), (om, os_) = last[CLAIMED]["final/train"], last[best_base]["final/train"]
        first = cm - om > cs + os_
        stable = drops[CLAIMED] <= min(drops[key] for key in baselines)
        out.append(
            f"- **The NPO+LoRA paper's claim** (NPO + LoRA + retain NLL + KL beats the baselines GA/GD/KL/NPO on the "
            f"final score and stays stable over more epochs) is "
            f"**{'reproduced' if first and stable else 'not reproduced'}** at this scale on the documents given to the "
            f"method: its train final score at the last epoch is "
            f"{cm:.3f} ± {cs:.3f} against {om:.3f} ± {os_:.3f} for the best baseline ({label[best_base]}), "
            f"{'a gap larger' if first else 'a gap not larger'} than the two standard deviations together, and it "
            f"{'loses the least' if stable else 'does not lose the least'} from its best epoch to the last "
            f"({drops[CLAIMED]:.3f}, the baselines {min(drops[key] for key in baselines):.3f} or more). Among all "
            f"{n} methods it ranks {rank['final/train'].index(CLAIMED) + 1} on train. Mean drop of the train final "
            "score from its best point to the last, all methods: "
            + ", ".join(f"{label[key]} {drops[key]:.3f}" for key in sorted(drops, key=drops.get))
            + " (0 where the last point was the best: a method still improving or that never moved; SUGD has fewer "
            "points)."
        )
    mia = [key for key in summary if last[key]["mia/score"][0] > 0.1]
    if mia:
        broke = [k for k in mia if last[k]["utility/score"][0] < 0.5]
        kept = [k for k in mia if k not in broke]
        out.append(
            "- **MIA**: the MIA score is above 0.1 only for "
            + ", ".join(f"{label[k]} ({last[k]['mia/score'][0]:.2f}, utility {last[k]['utility/score'][0]:.2f})"
                        for k in mia) + "."
            + (f" {', '.join(label[k] for k in broke)}: the model broke (held-out perplexity at least twice the "
               "target's), so member and nonmember losses are both high." if broke else "")
            + (f" {', '.join(label[k] for k in kept)} kept at least half the utility." if kept else "")
            + f" The other {n - len(mia)} methods leave the loss AUC near 1 (MIA score near 0). A likely reason: the "
            "methods train on the answer tokens only (`loss_on_prompt=False`), while the MIA loss is the mean over the "
            "whole document, about 80% of which is the sentence-completion prompt that no method trains on."
        )
    best = rank["final/train"][0]
    (fr, _), (rr, _) = last[best]["validation/forget/regurgitation"], last[best]["validation/retain/regurgitation"]
    (fk, _), (rk, _) = last[best]["validation/forget/knowledge"], last[best]["validation/retain/knowledge"]
    out.append(
        f"- **Unseen documents**: the train winner ({label[best]}) regurgitates the forget validation documents at "
        f"{fr:.2f} and the retain validation documents at {rr:.2f}, and answers {fk:.2f} and {rk:.2f} of their "
        f"questions (the target 1.00 for all)"
        + (": what it changed on documents it never saw, it changed on both alike, not selectively." if
           abs(fr - rr) < 0.1 else ".")
    )
    out.append("- Scale: 'stable over more epochs' is read here over the epochs of one run at a constant lr, not from "
               "the paper's separate 10- and 20-epoch runs; the model has 1.6M parameters, not 1B or 7B, and the "
               "utility term is a held-out perplexity ratio, not MMLU. Every method has the same lr (3e-3, tuned a "
               "little on GA and NPO+NLL+KL only) and the same 8 passes; the newer methods' defaults and SUGD's "
               "recipe were made for 7B models, so a method that forgot little here may need more steps or another "
               "lr, which this comparison does not search.")
    return out


def plot(summary: dict, before: dict[str, float], runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("final/train", "final score (train subsets)"), ("final/validation", "final score (validation subsets)"),
              ("train/task_score", "task score (train)"), ("validation/task_score", "task score (validation)"),
              ("mia/score", "MIA score"), ("utility/score", "utility (held-out ppl ratio)"),
              ("train/forget/regurgitation", "forget regurgitation (train)"),
              ("train/retain/regurgitation", "retain regurgitation (train)"),
              ("validation/forget/regurgitation", "forget regurgitation (validation)")]
    fig, axes = plt.subplots(3, 3, figsize=(13, 10), sharex=True)
    # 10 colours, then the same again dashed: twelve methods stay apart
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {key: (colours[i % len(colours)], "-" if i < len(colours) else "--") for i, key in enumerate(summary)}
    for ax, (k, name) in zip(axes.flat, panels):
        for key in summary:
            mine = [run for run in runs if run["method"] == key]
            epochs = np.array([forget_passes(p) for p in mine[0]["history"]])
            values = np.array([[p[k] for p in run["history"]] for run in mine if len(run["history"]) == len(epochs)])
            m = values.mean(0)
            s = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(m)
            colour, style = styles[key]
            ax.plot(epochs, m, marker="o", markersize=3, color=colour, linestyle=style, label=METHODS[key]["label"])
            ax.fill_between(epochs, m - s, m + s, color=colour, alpha=0.15)
        ax.set_title(name, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch (passes over each forget row)")
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, stem: str, settings: Settings, counts: dict, target: dict, before: dict,
                 runs: list[dict], timings: dict, max_new_tokens: dict, command: str, quick: bool,
                 rewritten: bool = False) -> dict[str, str]:
    summary = summarise(runs, settings)
    paths = {"table": str(out_dir / f"{stem}.md"), "json": str(out_dir / f"{stem}.json"),
             "plot": str(out_dir / f"{stem}.png")}
    n_seeds = sorted({len(s["seeds"]) for s in summary.values()})
    plot(summary, before, runs, Path(paths["plot"]),
         f"LUME methods on a {target['num_parameters'] / 1e6:.1f}M OLMo that memorised real LUME rows "
         f"(mean ± std over {'/'.join(map(str, n_seeds))} seeds)"
        + ("; SUGD is scored after each whole chunked schedule" if "sugd" in summary else ""))
    m = timings
    lines = [
        "# The LUME methods compared on real LUME data (a small OLMo-architecture model)" + (" — QUICK MODE" if quick
                                                                                            else ""),
        "",
        f"`{command}` (benchmarks/lume_methods.py; its docstring describes every choice). "
        f"{time.strftime('%Y-%m-%d')}, on this project's shared 2-core CPU machine, "
        f"{torch.get_num_threads()} torch thread(s)."
        + (" This report was written again from its JSON (`--from-json`): the numbers and timings are the run's."
           if rewritten else ""),
        "",
        "## What was run",
        "",
        f"- Data: the first {settings.docs_per_task} documents of each task from each LUME split (forget_train Task3: "
        "MIA members), with all their rows: "
        + "; ".join(f"{split} {c['documents']} documents, {c['rows']} rows ({c['sc']} sc, {c['qa']} qa)"
                    for split, c in counts.items() if isinstance(c, dict))
        + f". MIA: {counts['mia_members']} members (the forget_train Task3 documents of the subset) against "
        f"{counts['mia_nonmembers']} nonmembers; utility: the perplexity of {counts['utility_documents']} other "
        "nonmember (Wikipedia) documents the model never saw.",
        f"- Target: OLMo architecture, hidden {settings.hidden_size}, {settings.num_hidden_layers} layers, "
        f"{settings.num_attention_heads} heads, {settings.vocab_size}-token BPE vocabulary trained on the LUME text "
        f"({target['num_parameters'] / 1e6:.2f}M parameters), memorised all rows of the four subsets for "
        f"{settings.memorise_epochs} epochs at AdamW lr {settings.memorise_learning_rate}, then "
        f"{settings.memorise_final_epochs} at {settings.memorise_final_learning_rate} (batch "
        f"{settings.memorise_batch_size}, loss on every token, max_length {settings.max_length}): loss "
        f"{target['memorise_losses'][0]:.3f} -> {target['memorise_losses'][-1]:.4f} in "
        f"{target['memorise_seconds']:.0f} s{' (cached: built by an earlier run)' if target['from_cache'] else ''}.",
        f"- Unlearning: every method on the forget_train subset with the retain_train subset, LoRA r={settings.lora_r} "
        f"alpha={settings.lora_alpha} (on all linear layers unless said below), lr {settings.learning_rate} "
        f"(constant), batch {settings.batch_size} forget + {settings.batch_size} retain rows, {settings.epochs} epochs "
        f"({math.ceil(counts['forget_train']['rows'] / settings.batch_size)} steps each), seeds "
        f"{', '.join(map(str, settings.seeds))}. The methods: "
        + "; ".join(f"{METHODS[k]['label']} = {json.dumps(method_config(k))}"
                    + (f", LoRA on {describe_lora_targets(lora_config(k, settings))}" if METHODS[k].get("lora") else "")
                    for k in settings.methods) + ".",
        "  GA/GD/KL/NPO are the organisers' baselines (they ran them with full fine-tuning; here they train the"
        " same LoRA adapter as the others). NPO+NLL+KL is NPO + LoRA + retain NLL (gamma 1) + retain KL (delta 0.5), "
        "beta 0.5: the NPO+LoRA paper's 1B setting. LIBU: `InfluenceUnlearningTrainer` (influence step, then GD with "
        "Sophia). SimNPO, UNDIAL, WGA and SatImp: their method files' default hyperparameters and a retain NLL of "
        "weight 1. RMU: its default hyperparameters (c = 5 x the measured activation norm, retain weight 1200) on "
        "layer 2 of 4.",
        *([f"  SUGD, the task winner's chunked gradient difference (`UnlearningConfig.from_preset(\"sugd-lora\")` "
           "with this comparison's lr and batch): the forget rows in file order in chunks of "
           f"{method_config('sugd')['forget_chunk_size']}, each chunk unlearned "
           f"{method_config('sugd')['epochs_per_chunk']} times in a row with a fresh optimizer, with "
           f"{method_config('sugd')['retain_per_forget']} retain rows per forget row (retain NLL weight "
           f"{method_config('sugd')['retain_nll_weight']:g} = lambda 1 x r); one Trainer epoch is that whole schedule, "
           f"so it runs {trainer_epochs('sugd', settings)} of them ({settings.epochs} passes over each forget row, as "
           "the others) and is scored after each; its points are plotted at the passes so far."]
          if "sugd" in settings.methods else []),
        f"- Scoring: greedy generation of at most {max_new_tokens['sc']} new tokens for sentence completions and "
        f"{max_new_tokens['qa']} for questions"
        + (" (the longest answer of that kind in the subset + 8), " if not settings.max_new_tokens else ", ")
        + "LUME task score (harmonic mean of the 12 terms, forget inverted) on the **train** subsets (the documents "
        "the method was given) and on the **validation** subsets (memorised documents the method never saw); MIA score "
        "`1 - 2|AUC - 0.5|` (loss attack); **utility = min(1, ppl_target / ppl)** of the held-out documents, "
        "reported in place of MMLU, which is meaningless for a model this small; **final = mean(task, MIA, "
        "utility)**. Scored before the first step and after every epoch; the tables show the last epoch, "
        "mean ± sample std over seeds.",
        f"- Time: {m['total_seconds'] / 60:.1f} min in all (target model {m['target_seconds']:.0f} s, scoring the "
        f"target {m['before_seconds']:.0f} s, {len(runs)} unlearning runs {m['runs_seconds'] / 60:.1f} min: "
        + ", ".join(f"{METHODS[k]['label']} {statistics.mean(s['seconds']):.0f} s" for k, s in summary.items())
        + " per run, scoring included)."
        + (f" {m['reused_runs']} run(s) were reused from an earlier invocation (--resume)." if m.get("reused_runs")
           else "")
        + (f" {m['merged_runs']} run(s) were taken from `{m['merged_from']}` (`--merge`; run there, "
           f"{m['merged_total_seconds'] / 60:.1f} min in all for that invocation, same settings and target): the "
           f"total above is this invocation's, the run times are each run's own." if m.get("merged_runs") else ""),
        "",
        "## Scores at the last epoch",
        "",
        table(summary, before, HEADLINE),
        "",
        "Regurgitation (ROUGE-L recall) and knowledge (exact match), not inverted:",
        "",
        table(summary, before, DETAIL),
        "",
        "## Across epochs (lume_methods.png)",
        "",
        stability_table(summary),
        "",
        f"![scores across epochs]({Path(paths['plot']).name})",
        "",
        "## Reading",
        "",
        *reading(summary, before, runs),
        "",
    ]
    Path(paths["table"]).write_text("\n".join(lines))
    Path(paths["json"]).write_text(json.dumps({
        "settings": dataclasses.asdict(settings), "subset": counts, "max_new_tokens": max_new_tokens,
        "target": {k: v for k, v in target.items() if k != "cache_dir"}, "before": before, "timings": timings,
        "command": command, "runs": runs,
    }, indent=1))
    return paths


# ---- main ------------------------------------------------------------------------------------------------------------


def rewrite_report(path: Path, out_dir: Path) -> dict[str, Any]:
    """The table and plot again from a results JSON (e.g. after changing the report), with its recorded timings."""
    data = json.loads(path.read_text())
    settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = {**data["target"], "from_cache": data["target"].get("from_cache", False)}
    paths = write_report(out_dir, path.stem, settings, data["subset"], target, data["before"], data["runs"],
                         data["timings"], data["max_new_tokens"],
                         data.get("command", "python benchmarks/lume_methods.py"), path.stem.endswith("_quick"),
                         rewritten=True)
    print(Path(paths["table"]).read_text())
    return {"paths": paths, "settings": settings, "before": data["before"], "runs": data["runs"],
            "timings": data["timings"]}


def display_path(path: Path) -> str:
    """`path` relative to the repository when it is inside it (so a report names no machine's folders)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path.name


def merged_runs(path: Path, settings: Settings, target: dict, before: dict[str, float],
                tolerance: float = 1e-6) -> tuple[dict[tuple[str, int], dict], dict]:
    """The runs of the results JSON `path` by (method, seed), and its timings, for `--merge`. Refused unless it was
    made with the same settings (methods and seeds aside) and the same target model: equal target settings,
    memorisation losses and scores before unlearning (within `tolerance`), so its runs and this invocation's are of
    one comparison. A merged run is taken as it is, even if its method's entry in METHODS changed since."""
    data = json.loads(path.read_text())
    mine = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("seeds", "methods")}
    theirs = {k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()
              if k not in ("seeds", "methods")}
    problems = [f"setting {k}: {theirs.get(k)!r} there, {v!r} here" for k, v in mine.items() if theirs.get(k) != v]
    if data["target"]["settings"] != settings.target_key():
        problems.append("another target model (its settings differ)")
    for name, a, b in (("last memorisation loss", data["target"]["memorise_losses"][-1], target["memorise_losses"][-1]),
                       *((f"score before unlearning {k}", data["before"].get(k, math.nan), v)
                         for k, v in before.items())):
        if not abs(a - b) <= tolerance * max(1.0, abs(b)):
            problems.append(f"{name}: {a!r} there, {b!r} here")
    if problems:
        raise SystemExit(f"--merge {path}: not the same comparison, its runs are not merged:\n  "
                         + "\n  ".join(problems))
    unknown = sorted({run["method"] for run in data["runs"]} - set(METHODS))
    if unknown:
        raise SystemExit(f"--merge {path}: runs of methods this script does not define: {unknown}")
    print(f"[lume_methods] --merge: {len(data['runs'])} runs of {path} (same settings and target)", flush=True)
    return {(run["method"], run["seed"]): run for run in data["runs"]}, data["timings"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="The tiny configuration of the test (about 2 minutes).")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="The LUME folder (with mia/).")
    parser.add_argument("--output-dir", default=str(REPO_ROOT / "benchmarks" / "results"),
                        help="Where lume_methods.{md,json,png} (lume_methods_quick.* with --quick) are written.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine).")
    parser.add_argument("--from-json", default=None, metavar="JSON",
                        help="Only write the table and plot again from a results JSON this script wrote (no run).")
    parser.add_argument("--resume", action="store_true",
                        help="Reuse the runs that an earlier invocation with the same settings finished (cached).")
    parser.add_argument("--merge", default=None, metavar="JSON",
                        help="Take the runs of a results JSON this script wrote (same settings but methods and seeds, "
                        "same target model and scores before unlearning: checked) and run only the (method, seed) "
                        "runs it lacks; the report covers both. It may be the output file itself.")
    add_dataclass_arguments(parser, Settings)
    return parser


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, default_word: str = "full") -> None:
    """One `--name` option per field of the settings dataclass `cls` (default None: not given), with its help."""
    for f in dataclasses.fields(cls):
        kind = str(f.type)
        if "tuple" in kind:
            elem = int if "int" in kind else str
            parser.add_argument(f"--{f.name}", type=elem, nargs="+", default=None,
                                help=f"{f.metadata['help']} ({default_word}: {' '.join(map(str, f.default))})")
        else:
            parser.add_argument(f"--{f.name}", type={"int": int, "float": float, "str": str}[kind], default=None,
                                help=f"{f.metadata['help']} ({default_word}: {f.default})")


def dataclass_overrides(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of `cls` given on the command line (lists as tuples)."""
    return {f.name: tuple(v) if isinstance(v, list) else v
            for f in dataclasses.fields(cls) if (v := getattr(args, f.name)) is not None}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args, argv)
    finally:  # called in-process (the tests), the caller's thread count is theirs again
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    if args.from_json:
        return rewrite_report(Path(args.from_json), Path(args.output_dir))
    t0 = time.perf_counter()
    settings = quick_settings() if args.quick else Settings()
    settings = dataclasses.replace(settings, **dataclass_overrides(args, Settings))
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    data_dir = Path(args.data)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "lume_methods_quick" if args.quick else "lume_methods"

    subset = select_subset(data_dir, settings.docs_per_task, settings.num_members, settings.num_utility_documents)
    print(f"[lume_methods] subset: {json.dumps(subset.counts())}", flush=True)
    model, tokenizer, target = load_or_build_target(settings, subset, data_dir)
    t_target = time.perf_counter()
    max_new_tokens = generation_caps(tokenizer, subset, settings.max_new_tokens)
    ppl_target = perplexity(model, tokenizer, subset.utility_documents)
    before = score_model(model, tokenizer, subset, max_new_tokens, settings.eval_batch_size, ppl_target)
    t_before = time.perf_counter()
    print(f"[lume_methods] target model before unlearning ({t_before - t_target:.0f} s): "
          + ", ".join(f"{k} {before[k]:.3f}" for _, k in HEADLINE + DETAIL), flush=True)
    del model

    merged, merged_timings = merged_runs(Path(args.merge), settings, target, before) if args.merge else ({}, {})
    run_key = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("seeds", "methods")}
    run_digest = hashlib.sha256(json.dumps(run_key, sort_keys=True).encode()).hexdigest()[:16]
    runs_dir = Path(target["cache_dir"]).parent / "runs" / run_digest
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs, reused, runs_seconds = [], 0, 0.0
    with tempfile.TemporaryDirectory(prefix="lume_methods-") as work:
        for key in settings.methods:
            for seed in settings.seeds:
                path = runs_dir / f"{key}-seed{seed}.json"
                if (key, seed) in merged:
                    run = merged[key, seed]
                elif args.resume and path.is_file():
                    run = json.loads(path.read_text())
                    reused += 1
                else:
                    run = run_method(key, seed, settings, subset, target["cache_dir"], max_new_tokens, ppl_target,
                                     before, Path(work))
                    path.write_text(json.dumps(run))
                runs_seconds += run["seconds"]
                runs.append(run)
                last = run["history"][-1]
                print(f"[lume_methods] {METHODS[key]['label']} seed {seed} ({run['seconds']:.0f} s): "
                      + ", ".join(f"{k} {last[k]:.3f}" for _, k in HEADLINE), flush=True)
    timings = {"target_seconds": t_target - t0, "before_seconds": t_before - t_target, "runs_seconds": runs_seconds,
               "reused_runs": reused, "total_seconds": time.perf_counter() - t0}
    used = [k for k in merged if k[0] in settings.methods and k[1] in settings.seeds]
    if used:
        timings.update(merged_runs=len(used), merged_from=display_path(Path(args.merge)),
                       merged_total_seconds=merged_timings["total_seconds"])
    command = "python benchmarks/lume_methods.py" + ("" if not argv and len(sys.argv) < 2 else " " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    paths = write_report(out_dir, stem, settings, subset.counts(), target, before, runs, timings, max_new_tokens,
                         command, args.quick)
    print(Path(paths["table"]).read_text())
    for name, path in paths.items():
        print(f"{name:>6}: {path}")
    return {"paths": paths, "settings": settings, "before": before, "runs": runs, "timings": timings}


if __name__ == "__main__":
    main()
