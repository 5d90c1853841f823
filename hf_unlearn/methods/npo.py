"""NPO (Zhang et al. 2024): negative preference optimisation on the forget set, plus the retain NLL and KL."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import npo_loss, sequence_log_probs
from .base import Needs, StepContext, UnlearningMethod, register_method

NPO_LEVELS = ("sequence", "token")


@dataclass
class NPOArguments:
    r"""
    Hyperparameters of method `"npo"`.

    Parameters:
        beta (`float`, *optional*, defaults to `0.5`):
            Inverse temperature of the NPO loss. As beta tends to 0 the NPO gradient tends to gradient ascent's.
        npo_level (`str`, *optional*, defaults to `"sequence"`):
            `"sequence"`: log pi(y|x) is the sum of the answer tokens' log-probs and the NPO loss is averaged over
            forget rows. `"token"`: the NPO loss is applied to each answer token and averaged over answer tokens
            (as in the NPO+LoRA submission's code).
    """

    beta: float = field(
        default=0.5,
        metadata={"help": "Inverse temperature of the NPO loss. As beta tends to 0 NPO tends to gradient ascent."},
    )
    npo_level: str = field(
        default="sequence",
        metadata={
            "help": "'sequence': log pi(y|x) sums the answer tokens' log-probs, NPO averaged over forget rows. "
            "'token': NPO per answer token, averaged over answer tokens.",
            "choices": list(NPO_LEVELS),
        },
    )


@register_method
class NPO(UnlearningMethod):
    name = "npo"
    description = "NPO on the forget set + retain_nll_weight * retain NLL + retain_kl_weight * retain KL"
    paper = (
        "Zhang et al. 2024, Negative Preference Optimization (arXiv:2404.05868); Bronec & Helcl 2025, "
        "AILS-NTUA/Charles at SemEval-2025 Task 4 NPO+LoRA"
    )
    arguments = NPOArguments
    retain_terms = ("nll", "kl")

    def check(self) -> None:
        if self.args.npo_level not in NPO_LEVELS:
            raise ValueError(f"npo_level must be one of {NPO_LEVELS}, got {self.args.npo_level!r}.")
        if self.args.beta <= 0:
            raise ValueError(f"beta must be > 0 (the NPO temperature), got {self.args.beta}.")

    def needs(self) -> Needs:
        return Needs(
            forget_ref_log_probs=True, retain_nll=self.retain_nll_weight > 0, retain_kl=self.retain_kl_weight > 0
        )

    def precomputed_reference(self, token_logp, mask):
        # Sequence level needs one number per row: log pi_ref(y|x).
        if self.args.npo_level == "sequence":
            return sequence_log_probs(token_logp, mask).item()
        return token_logp.tolist()

    def loss(self, ctx: StepContext):
        beta, ref = self.args.beta, ctx.reference.forget_logp
        if self.args.npo_level == "sequence":
            policy = sequence_log_probs(ctx.forget_logp, ctx.forget_mask)
            if ref.dim() == 2:  # token log-probs of this step's reference pass; precomputed ones are per row
                ref = sequence_log_probs(ref, ctx.forget_mask)
            npo = ctx.row_mean(npo_loss(policy, ref, beta))
        else:
            npo = ctx.token_mean(npo_loss(ctx.forget_logp, ref, beta))
        ctx.log("npo_loss", npo)
        return npo + self.retain_loss(ctx)
