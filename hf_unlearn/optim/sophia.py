"""SophiaG: Sophia with the Gauss-Newton-Bartlett Hessian estimator, plus the pure tensor helpers it needs.

Reference: Hong Liu, Zhiyuan Li, David Hall, Percy Liang, Tengyu Ma, "Sophia: A Scalable Stochastic Second-order
Optimizer for Language Model Pre-training", ICLR 2024 (arXiv:2305.14342), Algorithm 3.

With gradient `g`, momentum `m`, diagonal Hessian estimate `h` and a parameter `theta`, one step is

    m     <- b1 * m + (1 - b1) * g
    h     <- b2 * h + (1 - b2) * g_hat * g_hat          (only on refresh steps, see below)
    theta <- theta * (1 - lr * weight_decay)            (decoupled weight decay)
    theta <- theta - lr * sign(m) * min(|m| / (rho * bs * h + eps), 1)

`g_hat` is the gradient of the mean cross-entropy on labels *sampled from the model's own distribution* (the GNB
estimator: its square is an unbiased estimate of the Gauss-Newton diagonal divided by the batch size, hence the
`bs` factor in the denominator). The paper's `gamma` is `rho` here and its `B * g_hat^2` is `bs * h`.

How a training loop drives it (what `hf_unlearn`'s trainers do):

```python
optimizer = SophiaG(model.parameters(), lr=1e-4, bs=tokens_per_step)
for batch in loader:
    if optimizer.hessian_estimator == "gnb" and optimizer.should_update_hessian():
        optimizer.zero_grad()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        causal_lm_gnb_loss(logits, batch["labels"]).backward()  # labels sampled from the model inside
        optimizer.update_hessian()
        optimizer.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()  # with hessian_estimator="sq_grad" the refresh happens in here, from this gradient
    optimizer.zero_grad()
```
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..losses import IGNORE_INDEX
from .registry import register_optimizer

# The defaults of Sophia (Liu et al. 2023) and of the LIBU configs, set here once.
DEFAULT_RHO = 0.04
DEFAULT_HESSIAN_INTERVAL = 10
HESSIAN_ESTIMATORS = ("gnb", "sq_grad")
# Hyperparameters that define one schedule for the whole optimizer: every param group must share them.
_SCHEDULE_KEYS = ("hessian_interval", "hessian_update_prob", "hessian_estimator", "seed")


# --------------------------------------------------------------------------------------------------------------------
# Pure tensor helpers for the Gauss-Newton-Bartlett estimator
# --------------------------------------------------------------------------------------------------------------------
def sample_labels_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample one label per position from `softmax(logits)`; positions that are not scored get `-100`.

    Positions are *aligned*: `out[..., i]` is drawn from `softmax(logits[..., i, :])` and is the target for those
    logits. (For a causal LM whose `labels` follow the Hugging Face convention, shift first, or use
    [`causal_lm_gnb_loss`], which does.)

    Args:
        logits (`torch.Tensor` of shape `(..., vocab_size)`):
            Unnormalised scores. Detached before sampling: the sample is a constant, not part of the graph.
        labels (`torch.Tensor` of shape `(...)`, *optional*):
            The true labels, aligned with `logits`. Only their `-100` positions are used: they stay `-100`.
        attention_mask (`torch.Tensor` of shape `(...)`, *optional*):
            Aligned with `logits`; positions where it is 0 get `-100`.
        generator (`torch.Generator`, *optional*):
            Source of randomness (on the logits' device), for reproducible samples.

    Returns:
        `torch.LongTensor` of shape `logits.shape[:-1]`.
    """
    # Sample in float32: a bf16/fp16 softmax over a large vocabulary loses the small probabilities.
    probs = torch.softmax(logits.detach().float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    sampled = torch.multinomial(flat, num_samples=1, generator=generator).reshape(probs.shape[:-1])
    keep = torch.ones_like(sampled, dtype=torch.bool)
    if labels is not None:
        keep &= labels.to(sampled.device) != IGNORE_INDEX
    if attention_mask is not None:
        keep &= attention_mask.to(sampled.device).bool()
    return sampled.masked_fill(~keep, IGNORE_INDEX)


def gnb_hessian_loss(logits: torch.Tensor, sampled_labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `logits` on `sampled_labels` over the positions that are not `-100` (aligned).

    Backpropagating this loss and squaring the gradient is the GNB estimate of the diagonal Hessian (divided by the
    number of positions, which SophiaG's `bs` puts back). Returns 0 (still attached to the graph) when no position
    is scored.
    """
    vocab_size = logits.shape[-1]
    losses = F.cross_entropy(
        logits.reshape(-1, vocab_size).float(),
        sampled_labels.reshape(-1).to(logits.device),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = (sampled_labels != IGNORE_INDEX).sum().clamp(min=1)
    return losses / count.to(losses.device)


def causal_lm_gnb_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The GNB loss of a causal LM's output: shift, sample labels from the model, return their mean cross-entropy.

    `logits` is `model(...).logits` of shape `(batch, seq, vocab)`; `labels` and `attention_mask` are the model's
    inputs of shape `(batch, seq)` in the Hugging Face convention (position `t`'s logits predict token `t + 1`).
    Where the next token's label is `-100` (prompt, padding) or masked out, nothing is sampled or scored.
    """
    shifted_logits = logits[..., :-1, :]
    shifted_labels = None if labels is None else labels[..., 1:]
    shifted_mask = None if attention_mask is None else attention_mask[..., 1:]
    sampled = sample_labels_from_logits(shifted_logits, shifted_labels, shifted_mask, generator=generator)
    return gnb_hessian_loss(shifted_logits, sampled)


# --------------------------------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------------------------------
def _bernoulli(seed: int, step: int, prob: float) -> bool:
    """A coin flip that depends only on `(seed, step)`: the same on every process and after a resume."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return bool(torch.rand((), generator=generator).item() < prob)


@register_optimizer("sophia")
class SophiaG(torch.optim.Optimizer):
    """Sophia (Liu et al. 2024) with a clipped, diagonal-Hessian-preconditioned momentum step.

    The update, per parameter, is described in the module docstring. The diagonal Hessian estimate `h` starts at
    zero, so until its first refresh every coordinate is clipped and the step is `lr * sign(m)`.

    Refreshing `h` needs either a second backward pass (GNB) or only the current gradient (squared-gradient):

    - `hessian_estimator="gnb"` (the paper's SophiaG): the training loop calls [`~SophiaG.update_hessian`] right
      after backpropagating [`gnb_hessian_loss`] / [`causal_lm_gnb_loss`], i.e. the loss on labels sampled from the
      model, whenever [`~SophiaG.should_update_hessian`] says so. `step()` never touches `h`.
    - `hessian_estimator="sq_grad"`: on the steps [`~SophiaG.should_update_hessian`] selects, `step()` itself first
      sets `h <- b2 * h + (1 - b2) * g * g` from the gradient it is about to apply (the loss on the true labels, an
      empirical-Fisher diagonal, as in LIBU), and then takes the step with that refreshed `h`. Nothing extra is
      needed from the training loop. Combine it with `hessian_update_prob` to refresh at random steps, each with that
      probability (LIBU draws it with probability `rho`: pass `hessian_update_prob=rho`).

    The refresh schedule counts the optimizer's completed `step()` calls, `t = 0, 1, 2, ...`: with
    `hessian_update_prob=None` it refreshes when `t % hessian_interval == 0` (the paper's "t mod k = 1" with 1-based
    t: the first step already has a Hessian), otherwise when a coin flip seeded by `(seed, t)` comes up heads. The
    count is kept in each param group (`"num_steps"`), so it is saved and restored with `state_dict()` together with
    the per-parameter state (`"step"`, `"exp_avg"` (m), `"hessian"` (h)).

    Args:
        params (`Iterable[torch.nn.Parameter]` or `Iterable[dict]`):
            Parameters or param groups. Groups may set their own `lr`, `betas`, `rho`, `weight_decay`, `eps`, `bs`,
            `maximize`; the schedule (`hessian_interval`, `hessian_update_prob`, `hessian_estimator`, `seed`) is
            shared by all groups.
        lr (`float`, *optional*, defaults to `1e-4`):
            Learning rate: the largest change of any coordinate in one step (before weight decay).
        betas (`tuple[float, float]`, *optional*, defaults to `(0.965, 0.99)`):
            EMA coefficients of the momentum `m` and of the Hessian estimate `h` (`h` moves only on refreshes).
        rho (`float`, *optional*, defaults to `0.04`):
            Scale of the Hessian in the denominator (the paper's gamma); larger `rho` means smaller, less often
            clipped steps.
        weight_decay (`float`, *optional*, defaults to `0.1`):
            Decoupled weight decay: `theta *= 1 - lr * weight_decay` on every step, independent of the gradient.
        eps (`float`, *optional*, defaults to `1e-15`):
            Added to the denominator so that a zero Hessian gives a (clipped) sign step instead of a division by 0.
        bs (`int`, **required**):
            Number of tokens (or examples, for a non-sequence loss) the Hessian loss is averaged over, usually the
            tokens per optimizer step across all processes. It turns the estimate of a *mean* loss's curvature
            back into the paper's `B * g_hat^2`. It is fixed at construction because `Trainer` calls `step()`
            without arguments; it can be changed later through `param_groups`.
        maximize (`bool`, *optional*, defaults to `False`):
            Ascend the loss instead of descending it.
        hessian_interval (`int`, *optional*, defaults to `10`):
            Refresh `h` every this many steps (the paper's k). Ignored when `hessian_update_prob` is set.
        hessian_estimator (`str`, *optional*, defaults to `"gnb"`):
            `"gnb"` (the loop backpropagates the sampled-label loss and calls `update_hessian()`) or `"sq_grad"`
            (`step()` refreshes `h` from the training gradient itself).
        hessian_update_prob (`float`, *optional*):
            If set, refresh `h` on each step with this probability instead of every `hessian_interval` steps. The
            draw depends only on `(seed, step)`, so all processes agree and a resumed run repeats it.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the `hessian_update_prob` draws.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = DEFAULT_RHO,
        weight_decay: float = 0.1,
        eps: float = 1e-15,
        *,
        bs: int,
        maximize: bool = False,
        hessian_interval: int = DEFAULT_HESSIAN_INTERVAL,
        hessian_estimator: Literal["gnb", "sq_grad"] = "gnb",
        hessian_update_prob: float | None = None,
        seed: int = 0,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr} (must be >= 0).")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas} (each must be in [0, 1)).")
        if not rho >= 0.0:
            raise ValueError(f"Invalid rho: {rho} (must be >= 0).")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay} (must be >= 0).")
        if not eps >= 0.0:
            raise ValueError(f"Invalid eps: {eps} (must be >= 0).")
        if not bs > 0:
            raise ValueError(f"Invalid bs: {bs} (the number of tokens per step, must be > 0).")
        if not (isinstance(hessian_interval, int) and hessian_interval >= 1):
            raise ValueError(f"Invalid hessian_interval: {hessian_interval} (must be an integer >= 1).")
        if hessian_estimator not in HESSIAN_ESTIMATORS:
            raise ValueError(f"Invalid hessian_estimator: {hessian_estimator!r} (choose from {HESSIAN_ESTIMATORS}).")
        if hessian_update_prob is not None and not 0.0 < hessian_update_prob <= 1.0:
            raise ValueError(f"Invalid hessian_update_prob: {hessian_update_prob} (must be in (0, 1]).")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            rho=rho,
            weight_decay=weight_decay,
            eps=eps,
            bs=bs,
            maximize=maximize,
            hessian_interval=hessian_interval,
            hessian_estimator=hessian_estimator,
            hessian_update_prob=hessian_update_prob,
            seed=seed,
            num_steps=0,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also runs inside `load_state_dict`: fill keys a checkpoint from an older version may lack.
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("hessian_interval", 10)
            group.setdefault("hessian_estimator", "gnb")
            group.setdefault("hessian_update_prob", None)
            group.setdefault("seed", 0)
            group.setdefault("num_steps", 0)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if len(self.param_groups) > 1:
            first, new = self.param_groups[0], self.param_groups[-1]
            for key in _SCHEDULE_KEYS:
                if new[key] != first[key]:
                    raise ValueError(
                        f"SophiaG has one Hessian schedule for all param groups: {key}={new[key]!r} differs from the "
                        f"first group's {first[key]!r}."
                    )
            # A group added mid-training joins the shared step count.
            new["num_steps"] = first["num_steps"]

    # -- the schedule ------------------------------------------------------------------------------------------------
    @property
    def hessian_estimator(self) -> str:
        """`"gnb"` or `"sq_grad"` (see the class docstring)."""
        return self.param_groups[0]["hessian_estimator"]

    @property
    def hessian_interval(self) -> int:
        """Refresh `h` every this many steps (when `hessian_update_prob` is None)."""
        return self.param_groups[0]["hessian_interval"]

    @property
    def num_steps(self) -> int:
        """How many times `step()` has run (saved in `state_dict()`)."""
        return self.param_groups[0]["num_steps"]

    def should_update_hessian(self, step: int | None = None) -> bool:
        """Whether the Hessian estimate is due for a refresh before optimizer step number `step` (0-based).

        Args:
            step (`int`, *optional*):
                The number of optimizer steps completed so far (`Trainer.state.global_step` during a step). Defaults
                to [`~SophiaG.num_steps`], the optimizer's own count; both agree unless steps were skipped.
        """
        group = self.param_groups[0]
        step = group["num_steps"] if step is None else int(step)
        if group["hessian_update_prob"] is not None:
            return _bernoulli(group["seed"], step, group["hessian_update_prob"])
        return step % group["hessian_interval"] == 0

    # -- the Hessian estimate ----------------------------------------------------------------------------------------
    def _init_state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def update_hessian(self, grads: Sequence[torch.Tensor | None] | None = None) -> None:
        """Fold squared gradients into the Hessian estimate: `h <- b2 * h + (1 - b2) * g * g` for every parameter.

        With `hessian_estimator="gnb"`, call it right after backpropagating the loss on labels sampled from the
        model ([`causal_lm_gnb_loss`] or [`gnb_hessian_loss`]), then zero the gradients before the training
        backward. Parameters without a gradient are skipped (their `h` is unchanged). It does not count as a step.

        Args:
            grads (`Sequence[torch.Tensor | None]`, *optional*):
                Use these instead of `p.grad` (e.g. from `torch.autograd.grad`, which leaves accumulated `.grad`
                untouched); one entry per parameter, in the order of
                `[p for group in optimizer.param_groups for p in group["params"]]`, `None` to skip one.
        """
        params = [p for group in self.param_groups for p in group["params"]]
        if grads is None:
            grads = [p.grad for p in params]
        elif len(grads) != len(params):
            raise ValueError(f"update_hessian got {len(grads)} gradients for {len(params)} parameters.")
        index = 0
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                grad = grads[index]
                index += 1
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("SophiaG does not support sparse gradients.")
                self._init_state(p)["hessian"].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)

    # -- the step ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Take one optimization step (and, with `hessian_estimator="sq_grad"`, refresh `h` first when due).

        Parameters without a gradient are skipped: no weight decay, no state change.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # Decide before counting this step, so the refresh lands on t = 0, k, 2k, ... like `should_update_hessian()`.
        refresh = self.hessian_estimator == "sq_grad" and self.should_update_hessian()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            scale = group["rho"] * group["bs"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("SophiaG does not support sparse gradients.")
                state = self._init_state(p)
                exp_avg, hessian = state["exp_avg"], state["hessian"]
                state["step"] += 1

                if refresh:
                    hessian.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if group["maximize"]:
                    grad = -grad

                p.mul_(1.0 - lr * group["weight_decay"])
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                # The ratio in float32: in fp16 an eps of 1e-15 rounds to 0 and 0 / 0 would poison the weights.
                ratio = (exp_avg.abs().float() / (hessian.float() * scale + group["eps"])).clamp_(max=1.0)
                p.addcmul_(exp_avg.sign(), ratio.to(p.dtype), value=-lr)
            group["num_steps"] += 1
        return loss


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The innermost optimizer under wrappers such as accelerate's `AcceleratedOptimizer` (which hide `SophiaG`'s
    `should_update_hessian`/`update_hessian`); returns `optimizer` itself when it is not wrapped."""
    seen = set()
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer) and id(optimizer) not in seen:
        seen.add(id(optimizer))
        optimizer = optimizer.optimizer
    return optimizer
