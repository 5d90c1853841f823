"""Loss maths of the unlearning methods, as pure tensor functions.

Every function takes tensors and returns tensors; none reduces over the batch by itself except where its name says
so. The trainer decides how to normalise (over the tokens or rows of a whole accumulated batch), which is what makes
gradient accumulation and multi-process training exact.

Conventions: `logits` is `(batch, seq, vocab)` for positions `0..seq-1`; `labels` is `(batch, seq)` with `-100` on
positions that carry no loss. Position `t` of the logits predicts `labels[:, t + 1]` (causal shift), so per-token
outputs are `(batch, seq - 1)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for next-token prediction and their mask: `(labels[:, 1:] with -100 replaced by 0, mask)`."""
    targets = labels[:, 1:]
    mask = targets.ne(IGNORE_INDEX)
    return targets.masked_fill(~mask, 0), mask


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token, `(batch, seq - 1)`, zero where masked, and the float mask.

    Computed as `logit[target] - logsumexp(logits)` so no second vocabulary-sized tensor (a full log-softmax) is
    materialised.
    """
    targets, mask = shift_labels(labels)
    logits = logits[:, :-1].float()
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    logp = picked - torch.logsumexp(logits, dim=-1)
    mask = mask.to(logp.dtype)
    return logp * mask, mask


def sequence_log_probs(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) of each row: the sum of its answer tokens' log-probs, `(batch,)`."""
    return (token_logp * mask).sum(-1)


def nll_sum(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood over the masked tokens (divide by the token count for the mean NLL)."""
    return -(token_logp * mask).sum()


def npo_loss(policy_logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise NPO loss (Zhang et al. 2024): `-(2/beta) * logsigmoid(-beta * (log pi_theta - log pi_ref))`.

    Equals `(2/beta) * log(1 + (pi_theta / pi_ref) ** beta)`. Inputs may be sequence log-probs `(batch,)` or
    per-token log-probs; the result has the same shape and is not reduced.
    """
    return -(2.0 / beta) * F.logsigmoid(-beta * (policy_logp - ref_logp))


def kl_per_token(policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(pi_theta || pi_ref) over the full vocabulary at each target position, `(batch, seq - 1)`, zero where masked.

    Position `t` compares the two next-token distributions that predict `labels[:, t + 1]`, i.e. the same positions
    as `token_log_probs`. Only masked-in positions are computed, which keeps the vocabulary-sized temporaries to the
    answer tokens.
    """
    _, mask = shift_labels(labels)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=policy_logits.device)
    if not mask.any():
        return out
    policy = F.log_softmax(policy_logits[:, :-1][mask].float(), dim=-1)
    ref = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = sum p * (log p - log q) = KL(p || q)
    out[mask] = F.kl_div(ref, policy, log_target=True, reduction="none").sum(-1)
    return out
