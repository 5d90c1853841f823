"""Held-out anchored unlearning: forget documents pulled to the level of documents the model never saw.

A membership-inference attack scores a whole document by its mean token NLL, and it is two-sided: a forget document
far *less* likely than unseen ones is as visible as one still remembered. So the target is not "as unlikely as
possible" (gradient ascent, NPO) but the unseen level itself. The trainer measures *calibration* documents (never
seen, of the same kind as the forget documents) under the current model, without gradient, and this loss pulls each
forget document's NLL into their range, from both sides:

- `"band"` (default): `relu(q_low - NLL)^2 + relu(NLL - q_high)^2` with `[q_low, q_high]` the calibration NLLs'
  `anchor_low_quantile`-`anchor_high_quantile` range: no push once a document is inside it;
- `"quantiles"`: the k-th smallest forget NLL of a batch is pulled to the calibration's `(k - 1/2)/m` quantile, so
  the forget documents spread over the unseen range instead of gathering at one edge.

Where the documents' kinds are known (rows grouped by `rows_to_units`: a LUME task's documents, its questions), each
forget document is held against the calibration documents of its own kind.

Train it on whole documents (`forget_unit="documents"`: every token carries loss, as the attack scores them), with
the retain NLL and KL keeping the rest of the model. By default the calibration levels follow the current model
(unlearning moves the unseen level too, METHODS.md, "Forgetting to the unseen level"); `anchor_levels="start"` fixes
them at the model before unlearning instead, and `anchor_hold` keeps the calibration documents where they were. On
SmolLM2 neither stopped the unseen level from rising with the forget documents (docs/benchmarks.md); where the model
from before fine-tuning is at hand, `"pre_finetuning_distill"` is the method that kept it. The documents that steer
training must not be the ones a reported attack uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..calibration import same_kind
from ..losses import band_loss, empirical_quantiles, mean_token_nll, quantile_matching_loss
from .base import Needs, StepContext, UnlearningMethod, register_method

ANCHOR_TARGETS = ("band", "quantiles")
HOLD_KINDS = ("nll", "kl")
LEVELS = ("current", "start")


@dataclass
class AnchoredArguments:
    r"""
    Hyperparameters of method `"anchored"`: the forget documents' NLL pulled into the range of calibration documents
    (`calibration_dataset` of the trainer), plus the retain NLL and KL with their weights.

    Parameters:
        anchor_target (`str`, *optional*, defaults to `"band"`):
            `"band"`: a squared hinge on each document's NLL outside the calibration NLLs' quantile range;
            `"quantiles"`: the sorted forget NLLs of a batch pulled to evenly spaced calibration quantiles.
        anchor_low_quantile (`float`, *optional*, defaults to `0.25`):
            Lower edge of the band: this quantile of the calibration documents' NLL under the current model.
        anchor_high_quantile (`float`, *optional*, defaults to `0.75`):
            Upper edge of the band (a document pushed above it is pulled back down).
        anchor_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the anchored forget term against the retain terms.
        anchor_calibration_batch (`int`, *optional*, defaults to `4`):
            Calibration documents measured again at every optimisation step, in a fixed cycle; the levels are taken
            over the latest measurement of every calibration document. More follows the model more closely and costs
            a forward pass each.
        anchor_hold_weight (`float`, *optional*, defaults to `1.0`):
            Weight of a term that holds the calibration documents at their NLL from before unlearning:
            `mean((NLL_now - NLL_start)^2)` over the step's calibration documents, measured in the step's own policy
            pass (with gradient). Unlearning lifts the unseen level too, and the forget documents then chase a
            moving target; this keeps the unseen level where it was. 0: no hold (the calibration documents are
            measured without gradient).
        anchor_levels (`str`, *optional*, defaults to `"current"`):
            Which unseen level the band is read from. `"current"`: the calibration documents' NLL under the current
            model (re-measured, `anchor_calibration_batch` a step), so the target follows the model. `"start"`: their
            NLL under the model before unlearning, fixed. On SmolLM2 the current level rose with the forget documents
            (each push on them lifted the unseen documents too, and so the target), a loop that a fixed target does
            not have; the reported attack still compares against the final model's unseen level.
        anchor_hold (`str`, *optional*, defaults to `"nll"`):
            What the hold keeps. `"nll"`: each calibration document's mean NLL (one number per document: the model
            may still change how it predicts them, and did, on SmolLM2: the held documents stayed while other unseen
            documents of their kind drifted). `"kl"`: KL(pi_theta || pi_ref) on every token of them, with the model
            before unlearning as the reference (its adapter disabled): their whole predicted distribution, for a
            reference pass over the step's calibration documents.
    """

    anchor_target: str = field(
        default="band",
        metadata={"help": "anchored: 'band' (squared hinge outside the calibration NLL quantile range) or 'quantiles' "
                          "(sorted forget NLLs pulled to evenly spaced calibration quantiles).",
                  "choices": list(ANCHOR_TARGETS)},
    )
    anchor_low_quantile: float = field(
        default=0.25, metadata={"help": "anchored: lower edge of the band, a quantile of the calibration NLLs."})
    anchor_high_quantile: float = field(
        default=0.75, metadata={"help": "anchored: upper edge of the band, a quantile of the calibration NLLs."})
    anchor_weight: float = field(default=1.0, metadata={"help": "anchored: weight of the anchored forget term."})
    anchor_calibration_batch: int = field(
        default=4, metadata={"help": "anchored: calibration documents re-measured per step."})
    anchor_hold_weight: float = field(
        default=1.0, metadata={"help": "anchored: weight of holding the calibration documents at their NLL before "
                                       "unlearning (0: no hold)."})
    anchor_levels: str = field(
        default="current",
        metadata={"help": "anchored: the band from the calibration documents' NLL under the current model ('current') "
                          "or under the model before unlearning ('start', fixed).",
                  "choices": list(LEVELS)},
    )
    anchor_hold: str = field(
        default="nll",
        metadata={"help": "anchored: what the hold keeps: 'nll' (each calibration document's mean NLL) or 'kl' "
                          "(KL to the model before unlearning on every token of them; one more reference pass).",
                  "choices": list(HOLD_KINDS)},
    )


@register_method
class Anchored(UnlearningMethod):
    name = "anchored"
    description = ("forget documents' NLL pulled into the range of never-seen calibration documents (two-sided) + "
                   "retain NLL + KL")
    paper = (
        "Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks in Language Models (arXiv:2210.01504), "
        "unlearning to the unseen level; Shi et al. 2024, MUSE (arXiv:2407.06460), PrivLeak"
    )
    arguments = AnchoredArguments
    retain_terms = ("nll", "kl")

    def check(self) -> None:
        a = self.args
        if a.anchor_target not in ANCHOR_TARGETS:
            raise ValueError(f"anchor_target must be one of {ANCHOR_TARGETS}, got {a.anchor_target!r}.")
        if not 0.0 <= a.anchor_low_quantile <= a.anchor_high_quantile <= 1.0:
            raise ValueError(
                "anchor_low_quantile and anchor_high_quantile must satisfy 0 <= low <= high <= 1, got "
                f"{a.anchor_low_quantile} and {a.anchor_high_quantile}."
            )
        if a.anchor_weight <= 0:
            raise ValueError(f"anchor_weight must be > 0, got {a.anchor_weight}.")
        if a.anchor_hold_weight < 0:
            raise ValueError(f"anchor_hold_weight must be >= 0, got {a.anchor_hold_weight}.")
        if a.anchor_hold not in HOLD_KINDS:
            raise ValueError(f"anchor_hold must be one of {HOLD_KINDS}, got {a.anchor_hold!r}.")
        if a.anchor_levels not in LEVELS:
            raise ValueError(f"anchor_levels must be one of {LEVELS}, got {a.anchor_levels!r}.")
        if a.anchor_calibration_batch < 1:
            raise ValueError(f"anchor_calibration_batch must be >= 1, got {a.anchor_calibration_batch}.")

    def needs(self) -> Needs:
        return Needs(calibration_batch=self.args.anchor_calibration_batch,
                     calibration_refresh=self.args.anchor_levels == "current",
                     calibration_grad=self.args.anchor_hold_weight > 0,
                     calibration_kl=self.args.anchor_hold_weight > 0 and self.args.anchor_hold == "kl",
                     retain_nll=self.retain_nll_weight > 0,
                     retain_kl=self.retain_kl_weight > 0)

    def band(self, calibration_nll: torch.Tensor) -> torch.Tensor:
        """`[low, high]`: the calibration NLLs' quantiles at the band's edges."""
        probs = torch.tensor([self.args.anchor_low_quantile, self.args.anchor_high_quantile])
        return empirical_quantiles(calibration_nll, probs)

    def per_document(self, nll: torch.Tensor, calibration: torch.Tensor, calibration_group, forget_group):
        """Each forget document's loss against the unseen level of its own kind (all documents where kinds are not
        known): a question with its short answer is far less predictable than a document, unseen or not."""
        per_row = torch.zeros_like(nll)
        groups = [None] if forget_group is None else forget_group.unique().tolist()
        for group in groups:
            rows = slice(None) if group is None else (forget_group == group).to(nll.device)
            level = same_kind(calibration, calibration_group, group)
            if self.args.anchor_target == "band":
                low, high = self.band(level).to(nll.device, nll.dtype)
                per_row[rows] = band_loss(nll[rows], low, high)
            else:
                per_row[rows] = quantile_matching_loss(nll[rows], level)
        return per_row

    def loss(self, ctx: StepContext):
        nll = mean_token_nll(ctx.forget_logp, ctx.forget_mask)  # per document (per window of a long one)
        calibration = ctx.calibration_start if self.args.anchor_levels == "start" else ctx.calibration_nll
        per_row = self.per_document(nll, calibration, ctx.calibration_group, ctx.forget_group)
        has_tokens = ctx.forget_mask.sum(-1).gt(0).to(per_row.dtype)
        forget = self.args.anchor_weight * ctx.row_mean(per_row * has_tokens)
        ctx.log("anchor_loss", forget)
        # Logged as this micro-batch's share, so the step's sum is the value itself (see StepContext.log).
        share = torch.full_like(nll.detach(), 1.0)
        if self.args.anchor_levels == "current" or self.args.anchor_hold_weight > 0:  # else never re-measured
            ctx.log("calibration_nll", ctx.row_mean(share * ctx.calibration_nll.mean().to(share)))  # the current level
        ctx.log("forget_document_nll", ctx.row_mean(nll.detach()))
        loss = forget + self.retain_loss(ctx)
        if ctx.calibration_step_nll is not None:  # the step's first micro-batch: counted once per step
            if ctx.calibration_step_kl is not None:
                held = ctx.calibration_step_kl
            else:
                held = (ctx.calibration_step_nll - ctx.calibration_step_start).square()
            hold = self.args.anchor_hold_weight * held.mean()
            hold = hold / ctx.num_processes  # every process holds the same documents
            ctx.log("calibration_hold", hold)
            loss = loss + hold
        return loss
