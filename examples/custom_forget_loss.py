"""A method registered outside the package: push the forget answers towards uniform (KL(uniform || pi) per token, up to
a constant) instead of ascending their NLL; keep the retain NLL. Hyperparameters: a dataclass as `arguments`, mixed in
an UnlearningConfig subclass (`@dataclass class MyConfig(MyArguments, UnlearningConfig)`), so they show in --help.

    python examples/custom_forget_loss.py --dataset ../shared/data/lume --num_rows 8 --max_steps 20 --output_dir outputs/flat
"""

# hf_unlearn before torch: importing it sets OpenMP's passive wait policy, read when torch loads (threads.py).
import hf_unlearn  # noqa: F401  isort: skip
import torch
from peft import LoraConfig
from run_npo import DataArguments, answer_nll, load_data, tiny_target
from transformers import HfArgumentParser

from hf_unlearn import UnlearningConfig, UnlearningTrainer
from hf_unlearn.methods import StepContext, UnlearningMethod, register_method


@register_method
class Flatten(UnlearningMethod):
    name, description = "flatten", "KL(uniform || pi) on the forget answers + retain_nll_weight * retain NLL"
    retain_terms = ("nll",)  # the trainer computes the retain NLL when retain_nll_weight > 0

    def loss(self, ctx: StepContext) -> torch.Tensor:
        log_p = torch.log_softmax(ctx.forget_logits[:, :-1].float(), dim=-1)  # position t predicts token t + 1
        flatten = ctx.token_mean(-log_p.mean(-1))  # this micro-batch's share of the whole step's token mean
        ctx.log("flatten", flatten)  # logged next to `loss`
        return flatten + self.retain_loss(ctx)


if __name__ == "__main__":
    parser = HfArgumentParser((DataArguments, UnlearningConfig))
    parser.set_defaults(method="flatten", learning_rate=3e-3, logging_steps=5, report_to="none")
    script_args, args = parser.parse_args_into_dataclasses()
    forget, retain = load_data(script_args)
    model, tokenizer = tiny_target(forget, retain, script_args.tiny_memorise_epochs)
    before = answer_nll(model, tokenizer, forget), answer_nll(model, tokenizer, retain)
    UnlearningTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer,
                      peft_config=LoraConfig(r=8, target_modules="all-linear")).train()  # the adapter is in `model`
    after = answer_nll(model, tokenizer, forget), answer_nll(model, tokenizer, retain)
    print(f"answer NLL  forget {before[0]:.3f} -> {after[0]:.3f}   retain {before[1]:.3f} -> {after[1]:.3f}")
