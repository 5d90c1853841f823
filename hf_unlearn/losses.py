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


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(rows, columns)` of the logits that predict a target token (where `labels[:, 1:]` is not -100), row-major.

    Every function below that works on answer positions only orders them this way, so their `(N, ...)` outputs line
    up row for row.
    """
    _, mask = shift_labels(labels)
    return mask.nonzero(as_tuple=True)


# Rows of vocabulary-sized float32 temporaries handled at once (about 16 MB): a long vocabulary never needs more
# than a chunk of them beside the logits themselves, in the forward or the backward.
CHUNK_ELEMENTS = 2**22


def row_chunks(n_rows: int, vocab: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _take(index: tuple[torch.Tensor, ...], chunk: slice) -> tuple[torch.Tensor, ...]:
    return tuple(i[chunk] for i in index)


class _PickedLogProbs(torch.autograd.Function):
    """`log_softmax(logits[index])[targets]`, `(N,)`, chunked over the N rows.

    Saves only the logits (no copy), the targets and one log-normaliser per row; the backward recomputes the
    softmax a chunk at a time and writes it straight into the logits' gradient.
    """

    @staticmethod
    def forward(ctx, logits, targets, *index):
        out = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(out)
        for chunk in row_chunks(len(targets), logits.shape[-1]):
            z = logits[_take(index, chunk)].float()
            lse[chunk] = torch.logsumexp(z, dim=-1)
            out[chunk] = z.gather(-1, targets[chunk, None]).squeeze(-1) - lse[chunk]
        ctx.save_for_backward(logits, targets, lse, *index)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, targets, lse, *index = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        for chunk in row_chunks(len(targets), logits.shape[-1]):
            rows = _take(index, chunk)
            g = (logits[rows].float() - lse[chunk, None]).exp_().neg_()  # d/dz of -logsumexp: -softmax
            g.scatter_add_(-1, targets[chunk, None], torch.ones_like(g[:, :1]))  # d/dz of z[target]: one-hot
            grad[rows] = g.mul_(grad_out[chunk, None]).to(grad.dtype)
        return (grad, None, *(None for _ in index))


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    """`z - logsumexp(z)`, as the reference side takes it (`log_softmax_`): float32 `torch.log_softmax` is off by up
    to ~2e-5 per token on a 49k-way vocabulary with logits of ~25, which biases a KL of ~1e-3 by ~0.5%. Only the
    value needs it: a per-row offset of log p cancels in the gradient, whose softmax `log_softmax` normalises better."""
    return z - torch.logsumexp(z, dim=-1, keepdim=True)


class _KLToReference(torch.autograd.Function):
    """`KL(softmax(logits[index]) || exp(ref_logp))` per row, `(N,)`, chunked like `_PickedLogProbs`.

    Saves the logits (no copy) and the reference log-probs; d KL / dz = p * (log p - log q - KL) and
    d KL / d log q = -p are recomputed a chunk at a time in the backward.
    """

    @staticmethod
    def forward(ctx, logits, ref_logp, *index):
        out = torch.empty(ref_logp.shape[:1], dtype=torch.float32, device=logits.device)
        for chunk in row_chunks(len(out), logits.shape[-1]):
            logp = _log_softmax(logits[_take(index, chunk)].float())
            p = logp.exp()
            out[chunk] = p.mul_(logp.sub_(ref_logp[chunk])).sum(-1)
        ctx.save_for_backward(logits, ref_logp, *index)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, ref_logp, *index = ctx.saved_tensors
        grad = torch.zeros_like(logits) if ctx.needs_input_grad[0] else None
        grad_ref = torch.zeros_like(ref_logp) if ctx.needs_input_grad[1] else None
        for chunk in row_chunks(len(ref_logp), logits.shape[-1]):
            rows = _take(index, chunk)
            logp = torch.log_softmax(logits[rows].float(), dim=-1)
            p = logp.exp()
            diff = logp.sub_(ref_logp[chunk])
            kl = (p * diff).sum(-1, keepdim=True)
            g = grad_out[chunk, None]
            if grad_ref is not None:
                grad_ref[chunk] = (-p * g).to(grad_ref.dtype)
            if grad is not None:
                grad[rows] = p.mul_(diff.sub_(kl)).mul_(g).to(grad.dtype)
        return (grad, grad_ref, *(None for _ in index))


def scatter_answers(values: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor], shape) -> torch.Tensor:
    """Per-answer-token `values` `(N,)` back into a `(batch, seq - 1)` tensor, zero elsewhere (differentiable)."""
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_put(index, values)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token, `(batch, seq - 1)`, zero where masked, and the float mask.

    Computed as `logit[target] - logsumexp(logits)` at the answer positions only, a chunk of rows at a time, and the
    backward writes the gradient straight into one tensor of the logits' shape: no full log-softmax, no float copy
    of the logits.
    """
    targets, mask = shift_labels(labels)
    index = answer_positions(labels)
    picked = _PickedLogProbs.apply(logits, targets[index], *index)
    return scatter_answers(picked, index, mask.shape), mask.to(picked.dtype)


def answer_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`log_softmax(logits)[targets]` of `(N, vocab)` logits, `(N,)`, chunked (for logits kept at answer positions)."""
    return _PickedLogProbs.apply(logits, targets, torch.arange(len(targets), device=logits.device))


def log_softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax of `(N, vocab)` float logits over the vocabulary, in place, a chunk of rows at a time (no grad)."""
    for chunk in row_chunks(logits.shape[0], logits.shape[-1]):
        logits[chunk] -= torch.logsumexp(logits[chunk], dim=-1, keepdim=True)
    return logits


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
    index = answer_positions(labels)
    ref_logp = torch.log_softmax(ref_logits[index].float(), dim=-1)
    return answer_kl(policy_logits, ref_logp, labels)


def answer_kl(policy_logits: torch.Tensor, ref_logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`kl_per_token` from the reference's log-softmax at the answer positions only, `(N, vocab)` in
    `answer_positions(labels)` order: what the trainer keeps of the reference pass instead of its logits.

    Chunked over the answer tokens; the policy's log-softmax is recomputed in the backward rather than saved.
    """
    _, mask = shift_labels(labels)
    index = answer_positions(labels)
    return scatter_answers(_KLToReference.apply(policy_logits, ref_logp, *index), index, mask.shape)


class _SoftCrossEntropy(torch.autograd.Function):
    """`-sum_v q_v * log_softmax(logits[index])_v` per row, `(N,)`, chunked like `_PickedLogProbs`.

    `q` is a fixed target distribution (no gradient). Saves the logits (no copy) and `q`; the gradient with respect to
    the logits, `softmax(z) * sum(q) - q`, is recomputed a chunk at a time in the backward.
    """

    @staticmethod
    def forward(ctx, logits, q, *index):
        out = torch.empty(q.shape[:1], dtype=torch.float32, device=logits.device)
        for chunk in row_chunks(len(out), logits.shape[-1]):
            z = logits[_take(index, chunk)].float()
            target = q[chunk].float()
            out[chunk] = torch.logsumexp(z, dim=-1) * target.sum(-1) - (target * z).sum(-1)
        ctx.save_for_backward(logits, q, *index)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, q, *index = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        for chunk in row_chunks(len(q), logits.shape[-1]):
            rows = _take(index, chunk)
            target = q[chunk].float()
            g = torch.softmax(logits[rows].float(), dim=-1).mul_(target.sum(-1, keepdim=True)).sub_(target)
            grad[rows] = g.mul_(grad_out[chunk, None]).to(grad.dtype)
        return (grad, None, *(None for _ in index))


# Min-K%++'s floor on sigma (`hf_unlearn.metrics.mia.min_k_plus_plus`): a one-hot distribution keeps a finite score.
MIN_STD = 1e-12


def _standardised(logp: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(z, p, mu, sigma) of `(n, vocab)` log-probs: `z = (log p(target) - mu) / sigma`, sigma floored at `MIN_STD`."""
    p = logp.exp()
    mu = (p * logp).sum(-1)
    # centred: `second - mu^2` cancels to 0 (or below) in float32 where one token takes nearly all the mass
    sigma = (p * (logp - mu[:, None]).square()).sum(-1).sqrt().clamp_min(MIN_STD)
    z = (logp.gather(-1, targets[:, None]).squeeze(-1) - mu) / sigma
    return z, p, mu, sigma


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """float32 at least (float64 stays: the gradient checks run in it)."""
    return t if t.dtype == torch.float64 else t.float()


class _StandardisedLogProbs(torch.autograd.Function):
    """`(log p(target) - mu) / sigma` per row, `(N,)`, chunked like `_PickedLogProbs`: Min-K%++'s token value, with
    `mu` and `sigma` the mean and standard deviation of `log p(z)` for z drawn from the row's own distribution.

    With l = log-softmax, p its softmax, a = l[target] and s2 = sum p (l - mu)^2, the derivatives with respect to the
    logits are d a = onehot - p, d mu = p (l - mu), d s2 = p ((l - mu)^2 - s2 + 2 (l - mu)), and
    d z = (d a - d mu) / sigma - z d s2 / (2 sigma^2); recomputed a chunk at a time in the backward.
    """

    @staticmethod
    def forward(ctx, logits, targets, *index):
        out = torch.empty(targets.shape, dtype=_upcast(logits[:0]).dtype, device=logits.device)
        for chunk in row_chunks(len(targets), logits.shape[-1]):
            out[chunk] = _standardised(_log_softmax(_upcast(logits[_take(index, chunk)])), targets[chunk])[0]
        ctx.save_for_backward(logits, targets, *index)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, targets, *index = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        for chunk in row_chunks(len(targets), logits.shape[-1]):
            rows = _take(index, chunk)
            logp = _log_softmax(_upcast(logits[rows]))
            z, p, mu, sigma = _standardised(logp, targets[chunk])
            centred = logp - mu[:, None]
            d_mu = p * centred
            d_s2 = p * (centred.square() - sigma.square()[:, None] + 2 * centred)
            d_a = -p
            d_a.scatter_add_(-1, targets[chunk, None], torch.ones_like(d_a[:, :1]))
            g = (d_a - d_mu) / sigma[:, None] - (z / (2 * sigma.square()))[:, None] * d_s2
            grad[rows] = g.mul_(grad_out[chunk, None]).to(grad.dtype)
        return (grad, None, *(None for _ in index))


def standardised_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-K%++'s value of each target token, `(log p(x_t) - mu_t) / sigma_t` (Zhang et al. 2024), `(batch, seq - 1)`,
    zero where masked, and the float mask; differentiable with respect to the logits (through all three parts)."""
    targets, mask = shift_labels(labels)
    index = answer_positions(labels)
    values = _StandardisedLogProbs.apply(logits, targets[index], *index)
    return scatter_answers(values, index, mask.shape), mask.to(values.dtype)


def fixed_standardised_log_probs(base_logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`standardised_log_probs` of a fixed distribution given by its log-softmax `base_logp` `(N, vocab)` at the
    answer positions (`answer_positions(labels)` order), `(batch, seq - 1)`, zero where masked (no gradient)."""
    targets, mask = shift_labels(labels)
    index = answer_positions(labels)
    picked = targets[index]
    values = torch.empty(len(picked), dtype=torch.float32, device=base_logp.device)
    with torch.no_grad():
        for chunk in row_chunks(len(values), base_logp.shape[-1]):
            values[chunk] = _standardised(base_logp[chunk].float(), picked[chunk])[0]
    return scatter_answers(values, index, mask.shape)


def lowest_k_mean(values: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """Each row's mean of its `max(1, int(n * k))` smallest masked-in values, `(batch,)` (n: the row's masked-in
    count; 0 for a row with none): Min-K%'s and Min-K%++'s document score (`hf_unlearn.metrics.mia.min_k`),
    differentiable through the values it picks."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    mask = mask.bool()
    n = mask.sum(-1)
    count = torch.clamp((n.double() * k).floor().long(), min=1)  # as `int(len * k)` in the metric
    ordered = values.masked_fill(~mask, float("inf")).sort(dim=-1).values
    taken = torch.arange(values.shape[-1], device=values.device)[None, :] < torch.minimum(count, n)[:, None]
    total = torch.where(taken, ordered, torch.zeros_like(ordered)).sum(-1)
    return torch.where(n > 0, total / count.to(total.dtype), torch.zeros_like(total))


def soft_cross_entropy(policy_logits: torch.Tensor, q: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy `-sum_v q_v log pi_theta,v` of the policy against target distributions `q` `(N, vocab)` given at
    the answer positions (`answer_positions(labels)` order), `(batch, seq - 1)`, zero where masked. Its gradient with
    respect to the logits is `pi_theta - q`. Chunked over the answer tokens, like `answer_kl`."""
    _, mask = shift_labels(labels)
    index = answer_positions(labels)
    return scatter_answers(_SoftCrossEntropy.apply(policy_logits, q, *index), index, mask.shape)


def distill_kl(policy_logits: torch.Tensor, base_logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Forward KL `sum_v p_b,v (log p_b,v - log pi_theta,v)` of the policy from a fixed distribution given by its
    log-softmax `base_logp` `(N, vocab)` at the answer positions (`answer_positions(labels)` order), `(batch, seq - 1)`,
    zero where masked: `soft_cross_entropy` minus the target's entropy (a constant, so the gradient is the same, and
    the value reads 0 where the policy matches the target)."""
    _, mask = shift_labels(labels)
    index = answer_positions(labels)
    q = base_logp.exp()
    entropy = -(q * base_logp).sum(-1)
    return scatter_answers(_SoftCrossEntropy.apply(policy_logits, q, *index) - entropy, index, mask.shape)


def fixed_token_log_probs(base_logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A fixed distribution's log-probability of each target token, `(batch, seq - 1)`, zero where masked, from its
    log-softmax `base_logp` `(N, vocab)` at the answer positions (`answer_positions(labels)` order)."""
    targets, mask = shift_labels(labels)
    index = answer_positions(labels)
    picked = base_logp.gather(-1, targets[index].unsqueeze(-1)).squeeze(-1)
    return scatter_answers(picked, index, mask.shape)


def undial_targets(ref_logits: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """UNDIAL's self-distillation targets (Dong et al. 2024): `softmax(z_ref - beta * onehot(y))` of reference logits
    `(N, vocab)` at the answer positions, whose answer tokens `targets` `(N,)` get their logit lowered by `beta`."""
    z = ref_logits.detach().float().clone()
    z[torch.arange(len(targets), device=z.device), targets] -= beta
    return torch.softmax(z, dim=-1)


def mean_token_nll(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean answer-token NLL of each row, `(batch,)`: `Lbar_i = -(1/n_i) sum_t log p_it`; 0 for a row with n_i = 0."""
    return -(token_logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def simnpo_loss(mean_nll: torch.Tensor, beta: float, delta: float = 0.0) -> torch.Tensor:
    """Element-wise SimNPO loss (Fan et al. 2024): `-(2/beta) * logsigmoid(beta * (Lbar - delta))` of the rows' mean
    answer NLL `Lbar` (`mean_token_nll`); `delta` is a margin on the NLL side (the paper's gamma / beta). Its
    gradient is `-2 * sigmoid(beta * (delta - Lbar)) * grad(Lbar)`: a gradient ascent weighted in (0, 2)."""
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - delta))


def wga_weights(token_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Weighted gradient ascent's token weights `stopgrad(p_t ** beta)`, from the token log-probs (any shape)."""
    return (beta * token_logp.detach()).exp()


def satimp_weights(token_logp: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp's token weights `stopgrad(p_t ** beta1 * (1 - p_t) ** beta2)`, from the token log-probs (any shape)."""
    p = token_logp.detach().exp()
    return p.pow(beta1) * (1 - p).clamp(min=0).pow(beta2)


def hidden_mse(hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the hidden dimension of `(hidden - target) ** 2`, `(batch, seq)`; `target` broadcasts (RMU's
    steering vector `c * u`, or the frozen model's hidden states)."""
    return (hidden.float() - target.float()).pow(2).mean(-1)


def steering_vector(dim: int, seed: int) -> torch.Tensor:
    """RMU's fixed random direction `u = r / ||r||`, `r ~ U[0, 1)^dim` drawn from a generator seeded by `seed`."""
    r = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return r / r.norm()


def empirical_quantiles(values: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Quantiles of the 1-D `values` at `probs` in [0, 1], linearly interpolated between order statistics (the
    definition of `torch.quantile` and NumPy's default, written out so that `probs` may be any tensor)."""
    ordered = values.detach().float().sort().values
    position = probs.float().clamp(0, 1) * (len(ordered) - 1)
    below = position.floor().long()
    above = position.ceil().long()
    weight = position - below
    return ordered[below] * (1 - weight) + ordered[above] * weight


def band_loss(nll: torch.Tensor, low: float | torch.Tensor, high: float | torch.Tensor) -> torch.Tensor:
    """Two-sided band on each document's mean NLL, `(batch,)`: `relu(low - nll)^2 + relu(nll - high)^2`.

    Zero inside `[low, high]` (the unseen documents' range), pulling up a document the model still knows (NLL below
    the band) and down one pushed past it (NLL above: as visible to a membership attack as one remembered)."""
    return F.relu(low - nll).square() + F.relu(nll - high).square()


def quantile_matching_loss(nll: torch.Tensor, calibration_nll: torch.Tensor) -> torch.Tensor:
    """Quantile matching, `(batch,)`: the k-th smallest of the `m` documents' NLLs is pulled to the calibration
    NLLs' `(k - 1/2) / m` quantile (squared error), so the forget documents spread over the unseen range instead of
    gathering at one level. The targets carry no gradient; each document keeps its own place in the order."""
    m = nll.shape[0]
    rank = torch.empty(m, dtype=torch.long, device=nll.device)
    rank[nll.detach().argsort()] = torch.arange(m, device=nll.device)
    probs = (rank.float() + 0.5) / m
    targets = empirical_quantiles(calibration_nll, probs.to(calibration_nll.device)).to(nll.device, nll.dtype)
    return (nll - targets).square()
