"""Forget documents distilled toward the model from before fine-tuning: a model that never saw them.

Where the user has the model their model was fine-tuned from (the LUME organisers fine-tuned OLMo on the data; many
users fine-tune a public base on their own records), that model is what theirs would be had the forget documents never
been in the fine-tuning data, as far as those documents go. So instead of pushing the forget
documents' likelihood down (NPO, GA) or pulling their mean NLL to a measured level (`"anchored"`), this method
pulls the model's whole next-token distribution on every forget-document token toward that model's: the forward KL
`KL(p_pre || pi_theta)`, token mean over the step. A membership attack that scores a document by its loss,
zlib ratio or its least likely tokens (Min-K%, Min-K%++) then sees the pre-fine-tuning
model's view of it. Retain NLL and KL
(to the fine-tuned model, the adapter disabled) keep what the fine-tuning taught the rest.

Distillation alone left the forget documents short of the unseen level on SmolLM2 (the KL still ~0.3 nats a token
after 5 epochs, the members' loss 1.8-2.1 against 2.7 under the pre-fine-tuning model): `level_weight` adds a pull
on each forget document's mean NLL itself, to where a model that never saw it puts it: the pre-fine-tuning model's NLL
of that document plus the shift the fine-tuning gave documents it never saw (the calibration documents' NLL before
unlearning minus theirs under the pre-fine-tuning model, their mean, measured once at the start), squared on both
sides. A fixed per-document target, so no loop with the moving unseen level that `"anchored"` chased.

Lifting the members lifted unseen documents of their kind too (SmolLM2: 2.99 -> 3.08-3.25, held-out perplexity up to
+29%): `hold_weight` adds KL(pi_theta || pi_ref) on every token of `hold_batch` calibration documents a step, the
reference being the model before unlearning (its adapter disabled), to keep the unseen level where it was.

The level alone overshoots a finer attack: on SmolLM2 (issue #28, 20 epochs) the loss, zlib and Min-K% AUCs reached
0.5 while Min-K%++ fell to 0.19. Min-K%++ standardises each token's log-probability by the model's own next-token
distribution, and fine-tuning changed that view of unseen documents far more than their NLL (the unseen documents'
Min-K%++ score fell by 1.55 from the pre-fine-tuning model to the fine-tuned one, their NLL rose by 0.18): a member
given the pre-fine-tuning model's view exactly would still stand out (Min-K%++ AUC 1.0 against unseen documents
under the fine-tuned model), and pulling its NLL up moves its standardised values past the unseen ones'.
`z_level_weight` adds the same pull as the level on that score: each forget document's Min-K%++ score (the mean of
its `z_level_k` lowest standardised token log-probabilities) to the pre-fine-tuning model's score of it plus the
calibration documents' mean shift of that score, on both sides. Two differences from the level, both measured on that
target: the shift is taken over the calibration documents of the forget document's own kind where kinds are known
(LUME's templated biographies lost 7 of that score to fine-tuning, its Task3 documents 1.5: one mean overshoots the
one and falls short of the other), and the score is taken over standardised values floored at `-Z_FLOOR` (10) and
pulled by a pseudo-Huber `sqrt(1 + d^2) - 1` of the difference d: at a position where the model is nearly certain of
another token the standardised value reaches -1000 (the fine-tuned model on the unseen question rows of a template it
memorised), the gradient of such a value scales with 1/sigma, and without the floor those few positions drove every
step (SmolLM2: targets of -50 to -190, gradient norms of 350 clipped to 1). The loss, zlib and Min-K% attacks are not
trained on. Measured on SmolLM2 (issue #28, 20 epochs, z-level 2): Min-K%++ left 1.0 sooner but overshot the band
all the same (0.15 at 20 epochs), the members at their targets while the unseen documents moved away from where the
start had measured them; it does not help in this form (docs/benchmarks.md). `level_shift="current"` takes both
levels' shift from the calibration documents as they are now (`hold_batch` of them re-measured a step, no gradient),
so the targets follow the unseen documents that the members' rise lifts: a loop, as `"anchored"`'s current level
was, but one that settles when a member's rise lifts the unseen level by much less (on SmolLM2 members rose by 2.4
while the unseen documents rose by 0.1-0.3). `z_level_target="band"` pulls each forget document's Min-K%++ score
into a band of the calibration documents' scores of its kind (between their `z_band_low` and `z_band_high`
quantiles, by default the quartiles) instead of to a per-document target: the attack compares the two distributions,
and per-document targets inherit every document's own shift. `level_target="band"` does the same for the mean NLL:
each forget document's NLL pulled (squared, both sides) into the same quantiles of the calibration documents' NLLs of
its kind, instead of to the pre-fine-tuning model's NLL plus the shift. Why: under the model that never saw them the
12 SmolLM2 members were already easier than the unseen documents (mean NLL 2.71 against 2.81; 3 of 12 below the
unseen documents' 5th percentile), so a per-document target keeps those 3 exposed and the loss AUC at 0.6-0.7, where
the band puts every member among the unseen documents. Measured, it did not help (distillation holds the members below
such a band). `level_floor` keeps the per-document target and lifts only the targets below a low quantile of the
calibration documents' NLLs (of its kind) to that quantile: the issue's per-document view counts the forget
documents still below the unseen documents' 5th percentile, and a model that never saw them leaves 3 of those 12 there.
Measured (SmolLM2, floor 0.2, z-level 3): the share stayed at 3 of 12 while distillation still pulled those documents
toward the pre-fine-tuning model's view, the level it lifts them from; `floor_skips_distill` leaves them out of it.
Measured with it (the same setting, seed 0): exposed share 0.25 -> 0.00 with every attack inside its bar, but general
knowledge 0.194 -> 0.115 (docs/benchmarks.md).

It needs `pre_finetuning_model=` in the trainer (`--pre-finetuning-model` in `hf-unlearn unlearn`): a model with the
same tokenizer.
Issue #28, item 6; METHODS.md, "Forgetting to the unseen level".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..calibration import floored_min_k_score, same_kind
from ..losses import (
    band_loss,
    empirical_quantiles,
    distill_kl,
    fixed_standardised_log_probs,
    fixed_token_log_probs,
    lowest_k_mean,
    mean_token_nll,
)
from .base import Needs, StepContext, UnlearningMethod, register_method

# The z-level's floor on standardised token values (its docstring): the calibration documents' scores use it too.
Z_FLOOR = 10.0
LEVEL_SHIFTS = ("start", "current")
Z_TARGETS = ("pre", "band")


@dataclass
class PreFinetuningDistillArguments:
    r"""
    Hyperparameters of method `"pre_finetuning_distill"`: the forward KL from the model before fine-tuning (the
    trainer's `pre_finetuning_model`) on every forget token, plus the retain NLL and KL with their weights.

    Parameters:
        distill_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the distillation term on the forget documents against the retain terms.
        level_weight (`float`, *optional*, defaults to `0.0`):
            Weight of `(NLL - target)^2` on each forget document's mean NLL, the target being the pre-fine-tuning
            model's NLL of it plus the fine-tuning's shift of the unseen level (measured on the trainer's
            `calibration_dataset`, which it then needs). 0: distillation only.
        hold_weight (`float`, *optional*, defaults to `0.0`):
            Weight of KL(pi_theta || pi_ref) on every token of calibration documents (documents never seen, of the
            forget documents' kind; the reference is the model before unlearning), which holds the unseen level while
            the members rise. 0: off.
        hold_batch (`int`, *optional*, defaults to `4`):
            Calibration documents held per optimisation step, in a fixed cycle (each one more forward pass of the
            reference and one more row in the policy pass).
        z_level_weight (`float`, *optional*, defaults to `0.0`):
            Weight of `sqrt(1 + (S - target)^2) - 1` on each forget document's Min-K%++ score S (the mean of its
            `z_level_k` lowest standardised token log-probabilities, floored at -10), the target being the
            pre-fine-tuning model's score of it plus the fine-tuning's mean shift of that score on the calibration
            documents of its kind (which it then needs). 0: off.
        z_level_k (`float`, *optional*, defaults to `0.2`):
            The fraction of a document's tokens its Min-K%++ score averages (the attack's usual 20%).
        z_level_target (`str`, *optional*, defaults to `"pre"`):
            Where the z-level pulls each forget document's Min-K%++ score: `"pre"`, to the pre-fine-tuning model's
            score of it plus the unseen shift; `"band"`, between the `z_band_low` and `z_band_high` quantiles of the
            calibration documents' scores of its kind (at the start, or as re-measured with
            `level_shift="current"`), zero inside: the attack compares the two distributions, not each document
            with its own unseen view.
        level_target (`str`, *optional*, defaults to `"pre"`):
            Where the level pulls each forget document's mean NLL: `"pre"`, to the pre-fine-tuning model's NLL of it
            plus the unseen shift; `"band"`, between the `z_band_low` and `z_band_high` quantiles of the calibration
            documents' NLLs of its kind (at the start, or as re-measured with `level_shift="current"`), zero inside.
        level_floor (`float`, *optional*, defaults to `0.0`):
            With `level_target="pre"`: the quantile of the calibration documents' NLLs (of the forget document's kind)
            below which no forget document's target lies (a target under it is raised to it). 0: off.
        floor_skips_distill (`bool`, *optional*, defaults to `False`):
            With `level_floor`: a forget document whose target the floor lifts is left out of the distillation (its
            tokens carry no KL to the pre-fine-tuning model, which would hold it at the level the floor lifts it
            from); the others' distillation is weighed as before (per token of the step's forget documents).
        z_band_low (`float`, *optional*, defaults to `0.25`):
            With `z_level_target="band"` (or `level_target="band"`): the quantile of the calibration documents' scores
            (or NLLs) below which a forget document's score (or NLL) is pulled up.
        z_band_high (`float`, *optional*, defaults to `0.75`):
            The quantile above which it is pulled down. A band this wide still lets every member settle at its low
            edge, an AUC far from 0.5; a narrower one (0.4-0.6) holds them near the middle of the unseen documents.
        level_shift (`str`, *optional*, defaults to `"start"`):
            Where the levels' shift is measured: `"start"`, on the calibration documents under the model before
            unlearning, once; `"current"`, under the current model, `hold_batch` of them re-measured a step (a no-grad
            pass, or the hold's own pass), so the targets follow the unseen documents as unlearning moves them.
    """

    distill_weight: float = field(
        default=1.0, metadata={"help": "pre_finetuning_distill: weight of the KL from the model before fine-tuning on "
                                       "the forget documents."})
    level_weight: float = field(
        default=0.0, metadata={"help": "pre_finetuning_distill: weight of pulling each forget document's mean NLL to "
                                       "the pre-fine-tuning model's NLL of it plus the unseen shift measured on the "
                                       "calibration documents (needs them; 0: off)."})
    hold_weight: float = field(
        default=0.0, metadata={"help": "pre_finetuning_distill: weight of KL to the model before unlearning on every "
                                       "token of calibration documents, holding the unseen level (needs them; "
                                       "0: off)."})
    hold_batch: int = field(
        default=4, metadata={"help": "pre_finetuning_distill: calibration documents held (with hold_weight) or "
                                     "re-measured (with level_shift 'current') per step."})
    z_level_weight: float = field(
        default=0.0, metadata={"help": "pre_finetuning_distill: weight of pulling each forget document's Min-K%%++ "
                                       "score to the pre-fine-tuning model's score of it plus the unseen shift "
                                       "measured on the calibration documents (needs them; 0: off)."})
    z_level_k: float = field(
        default=0.2, metadata={"help": "pre_finetuning_distill: fraction of a document's tokens its Min-K%%++ score "
                                       "averages (with z_level_weight)."})
    z_level_target: str = field(
        default="pre",
        metadata={"help": "pre_finetuning_distill: the z-level's target, 'pre' (the pre-fine-tuning model's score plus "
                          "the unseen shift) or 'band' (between quantiles z_band_low and z_band_high of the "
                          "calibration documents' scores of the document's kind).",
                  "choices": list(Z_TARGETS)})
    level_target: str = field(
        default="pre",
        metadata={"help": "pre_finetuning_distill: the level's target, 'pre' (the pre-fine-tuning model's NLL plus the "
                          "unseen shift) or 'band' (between quantiles z_band_low and z_band_high of the calibration "
                          "documents' NLLs of the document's kind).",
                  "choices": list(Z_TARGETS)})
    level_floor: float = field(
        default=0.0, metadata={"help": "pre_finetuning_distill: with level_target 'pre', the calibration documents' "
                                       "NLL quantile (of the document's kind) below which no forget document's "
                                       "target lies (0: off)."})
    floor_skips_distill: bool = field(
        default=False, metadata={"help": "pre_finetuning_distill: with level_floor, a forget document whose target the "
                                         "floor lifts is not distilled toward the pre-fine-tuning model (whose view "
                                         "holds it at the level the floor lifts it from)."})
    z_band_low: float = field(
        default=0.25, metadata={"help": "pre_finetuning_distill: with z_level_target (or level_target) 'band', the "
                                        "calibration documents' quantile below which a forget document's Min-K%%++ "
                                        "score (or NLL) is pulled up."})
    z_band_high: float = field(
        default=0.75, metadata={"help": "pre_finetuning_distill: with z_level_target (or level_target) 'band', the "
                                        "quantile above which it is pulled down."})
    level_shift: str = field(
        default="start",
        metadata={"help": "pre_finetuning_distill: the levels' unseen shift measured on the calibration documents "
                          "under the model before unlearning ('start', once) or the current model ('current', "
                          "hold_batch of them re-measured a step).",
                  "choices": list(LEVEL_SHIFTS)})


@register_method
class PreFinetuningDistill(UnlearningMethod):
    name = "pre_finetuning_distill"
    description = "forget documents distilled toward the model before fine-tuning (KL from it) + retain NLL + KL"
    paper = (
        "Hinton et al. 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531), toward the pre-fine-"
        "tuning model as in retraining-free unlearning by a reference that never saw the data (issue #28, item 6)"
    )
    arguments = PreFinetuningDistillArguments
    retain_terms = ("nll", "kl")

    def check(self) -> None:
        if self.args.distill_weight <= 0:
            raise ValueError(f"distill_weight must be > 0, got {self.args.distill_weight}.")
        if self.args.level_weight < 0:
            raise ValueError(f"level_weight must be >= 0, got {self.args.level_weight}.")
        if self.args.hold_weight < 0:
            raise ValueError(f"hold_weight must be >= 0, got {self.args.hold_weight}.")
        if self.args.hold_batch < 1:
            raise ValueError(f"hold_batch must be >= 1, got {self.args.hold_batch}.")
        if self.args.z_level_weight < 0:
            raise ValueError(f"z_level_weight must be >= 0, got {self.args.z_level_weight}.")
        if not 0 < self.args.z_level_k <= 1:
            raise ValueError(f"z_level_k must be in (0, 1], got {self.args.z_level_k}.")
        if self.args.z_level_target not in Z_TARGETS:
            raise ValueError(f"z_level_target must be one of {Z_TARGETS}, got {self.args.z_level_target!r}.")
        if self.args.level_target not in Z_TARGETS:
            raise ValueError(f"level_target must be one of {Z_TARGETS}, got {self.args.level_target!r}.")
        if not 0 <= self.args.level_floor < 1:
            raise ValueError(f"level_floor must be in [0, 1), got {self.args.level_floor}.")
        if self.args.floor_skips_distill and not self.args.level_floor > 0:
            raise ValueError("floor_skips_distill needs level_floor > 0 (the floor it acts on).")
        if not 0 <= self.args.z_band_low <= self.args.z_band_high <= 1:
            raise ValueError(f"z_band_low and z_band_high must satisfy 0 <= low <= high <= 1, got "
                             f"{self.args.z_band_low} and {self.args.z_band_high}.")
        if self.args.level_shift not in LEVEL_SHIFTS:
            raise ValueError(f"level_shift must be one of {LEVEL_SHIFTS}, got {self.args.level_shift!r}.")

    def needs(self) -> Needs:
        z_level = self.args.z_level_weight > 0
        level, hold = self.args.level_weight > 0 or z_level, self.args.hold_weight > 0
        current = level and self.args.level_shift == "current"
        # the levels read the calibration documents' NLL (and Min-K%++ score) at the start, or as re-measured a step
        # ("current"); the hold measures hold_batch of them in the step's own policy pass, with their reference pass
        return Needs(forget_pre_logits=True, retain_nll=self.retain_nll_weight > 0,
                     retain_kl=self.retain_kl_weight > 0,
                     calibration_batch=self.args.hold_batch if hold or current else (1 if level else None),
                     calibration_refresh=current, calibration_grad=hold, calibration_kl=hold, calibration_pre=level,
                     calibration_min_k=self.args.z_level_k if z_level else None,
                     calibration_min_k_floor=Z_FLOOR)

    @staticmethod
    def level_targets(pre_logp, labels, mask, calibration_now, calibration_pre):
        """Each forget document's target NLL: the pre-fine-tuning model's, shifted by the unseen documents' mean
        change from that model to the one being unlearned (`calibration_now`: their NLL at the start or now)."""
        pre_nll = mean_token_nll(fixed_token_log_probs(pre_logp, labels), mask)
        return pre_nll + (calibration_now - calibration_pre).mean().to(pre_nll)

    @staticmethod
    def z_level_targets(pre_logp, labels, mask, k, calibration_now, calibration_pre, calibration_group=None,
                        forget_group=None):
        """Each forget document's target Min-K%++ score: the pre-fine-tuning model's, shifted by the mean change of
        that score, from that model to the one being unlearned, of the unseen documents of its kind (`same_kind`)."""
        pre_score = lowest_k_mean(fixed_standardised_log_probs(pre_logp, labels).clamp(min=-Z_FLOOR), mask, k)
        shifts = calibration_now - calibration_pre
        if forget_group is None:
            return pre_score + shifts.mean().to(pre_score)
        shift = torch.stack([same_kind(shifts, calibration_group, int(g)).mean() for g in forget_group.tolist()])
        return pre_score + shift.to(pre_score)

    @staticmethod
    def band(calibration_scores, calibration_group=None, forget_group=None, n_forget: int = 1,
             quantiles: tuple[float, float] = (0.25, 0.75)):
        """(low, high), `(n_forget,)` each: the `quantiles` of the calibration documents' scores (Min-K%++ or NLL) of
        each forget document's kind (`same_kind`; all of them where kinds are not known)."""
        probs = torch.tensor(quantiles, device=calibration_scores.device)
        groups = [None] * n_forget if forget_group is None else [int(g) for g in forget_group.tolist()]
        bands = torch.stack([empirical_quantiles(same_kind(calibration_scores, calibration_group, g), probs)
                             for g in groups])
        return bands[:, 0], bands[:, 1]

    def loss(self, ctx: StepContext):
        pre_logp = ctx.reference.forget_pre_logits.log_softmax(-1)
        forget = 0.0
        distilled = None  # per row, 1 where the document is distilled (None: every document)
        current = self.args.level_shift == "current"
        band_quantiles = (self.args.z_band_low, self.args.z_band_high)
        if self.args.level_weight > 0:
            calibration_now = ctx.calibration_nll if current else ctx.calibration_start
            nll = mean_token_nll(ctx.forget_logp, ctx.forget_mask)
            if self.args.level_target == "band":
                low, high = self.band(calibration_now, ctx.calibration_group, ctx.forget_group, len(nll),
                                      band_quantiles)
                low, high = low.to(nll), high.to(nll)
                target = (low + high) / 2  # logged: the band's middle
            else:
                target = self.level_targets(pre_logp, ctx.forget_labels, ctx.forget_mask, calibration_now,
                                            ctx.calibration_pre)
                if self.args.level_floor > 0:
                    floor, _ = self.band(calibration_now, ctx.calibration_group, ctx.forget_group, len(nll),
                                         (self.args.level_floor, self.args.level_floor))
                    lifted = target < floor.to(target)
                    target = torch.maximum(target, floor.to(target))
                    ctx.log("level_floored", ctx.row_mean(lifted.to(nll.dtype)))
                    if self.args.floor_skips_distill:
                        distilled = (~lifted).to(nll.dtype)
                low = high = target
            has_tokens = ctx.forget_mask.sum(-1).gt(0).to(nll.dtype)
            level = self.args.level_weight * ctx.row_mean(band_loss(nll, low, high) * has_tokens)
            ctx.log("level_loss", level)
            ctx.log("level_target", ctx.row_mean(target.detach()))
            forget = forget + level
        if self.args.z_level_weight > 0:
            k = self.args.z_level_k
            calibration_now = ctx.calibration_min_k if current else ctx.calibration_start_min_k
            score = floored_min_k_score(ctx.forget_logits, ctx.forget_labels, k, Z_FLOOR)
            if self.args.z_level_target == "band":
                low, high = self.band(calibration_now, ctx.calibration_group, ctx.forget_group, len(score),
                                      band_quantiles)
                low, high = low.to(score), high.to(score)
                distance = torch.relu(low - score) + torch.relu(score - high)  # 0 inside the band
                target = (low + high) / 2  # logged: the band's middle
            else:
                target = self.z_level_targets(pre_logp, ctx.forget_labels, ctx.forget_mask, k, calibration_now,
                                              ctx.calibration_pre_min_k, ctx.calibration_group, ctx.forget_group)
                distance = score - target
            has_tokens = ctx.forget_mask.sum(-1).gt(0).to(score.dtype)
            pull = (distance.square() + 1).sqrt() - 1  # pseudo-Huber: bounded gradient (docstring)
            z_level = self.args.z_level_weight * ctx.row_mean(pull * has_tokens)
            ctx.log("z_level_loss", z_level)
            ctx.log("z_level_target", ctx.row_mean(target.detach()))
            forget = forget + z_level
        kl = distill_kl(ctx.forget_logits, pre_logp, ctx.forget_labels)
        if distilled is not None:  # the documents the floor lifted are not held at the level it lifts them from
            kl = kl * distilled[:, None].to(kl)
        distill = self.args.distill_weight * ctx.token_mean(kl)
        ctx.log("distill_kl", distill)
        loss = distill + forget + self.retain_loss(ctx)
        if ctx.calibration_step_kl is not None:  # the step's first micro-batch: counted once per step
            hold = self.args.hold_weight * ctx.calibration_step_kl.mean() / ctx.num_processes  # same documents on all
            ctx.log("calibration_hold", hold)
            loss = loss + hold
        return loss
