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

It needs `pre_finetuning_model=` in the trainer (`--pre-finetuning-model` in `hf-unlearn unlearn`): a model with the
same tokenizer.
Issue #28, item 6; METHODS.md, "Forgetting to the unseen level".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import distill_kl
from .base import Needs, StepContext, UnlearningMethod, register_method


@dataclass
class PreFinetuningDistillArguments:
    r"""
    Hyperparameters of method `"pre_finetuning_distill"`: the forward KL from the model before fine-tuning (the
    trainer's `pre_finetuning_model`) on every forget token, plus the retain NLL and KL with their weights.

    Parameters:
        distill_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the distillation term on the forget documents against the retain terms.
    """

    distill_weight: float = field(
        default=1.0, metadata={"help": "pre_finetuning_distill: weight of the KL from the model before fine-tuning on "
                                       "the forget documents."})


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

    def needs(self) -> Needs:
        return Needs(forget_pre_logits=True, retain_nll=self.retain_nll_weight > 0,
                     retain_kl=self.retain_kl_weight > 0)

    def loss(self, ctx: StepContext):
        pre_logp = ctx.reference.forget_pre_logits.log_softmax(-1)
        forget = self.args.distill_weight * ctx.token_mean(distill_kl(ctx.forget_logits, pre_logp, ctx.forget_labels))
        ctx.log("distill_kl", forget)
        return forget + self.retain_loss(ctx)
