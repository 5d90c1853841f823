"""KL minimisation (as in TOFU, Maini et al. 2024): minus the forget NLL plus the weighted retain KL."""

from __future__ import annotations

from .base import StepContext, UnlearningMethod, register_method


@register_method
class KLMinimisation(UnlearningMethod):
    name = "kl"
    description = "KL minimisation: minus the forget NLL + retain_kl_weight * retain KL"
    paper = "Maini et al. 2024, TOFU: A Task of Fictitious Unlearning for LLMs"
    retain_terms = ("kl",)

    def check(self) -> None:
        if self.retain_kl_weight == 0:
            raise ValueError(
                "method='kl' with retain_kl_weight=0 is plain gradient ascent: set retain_kl_weight > 0 "
                "(e.g. 1.0) or use method='ga'."
            )

    def loss(self, ctx: StepContext):
        return -ctx.forget_nll + self.retain_loss(ctx)
