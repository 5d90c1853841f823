"""How much faster batched LUME generation is than the task's one-row-at-a-time loop, and that it agrees.

Builds the benchmark's target offline: a byte-level BPE tokenizer trained on the LUME train splits and a tiny
OLMo-architecture model that memorised 16 short Task2 training rows (as tests/conftest.py does). Then, on the 532
LUME validation rows (forget + retain), it times `generate_completions` (batched, left padding, KV cache) against
`generate_one_at_a_time` (the task script's loop), and prints:

- the speed-up (goal: at least 3x on a 2-core CPU);
- the agreement: the share of identical texts and the largest difference of any LUME score;
- the largest absolute difference between the batched MIA losses and the task's `model(ids, labels=ids).loss`.

No generated text is printed (it may hold forget-set text).

    python benchmarks/eval_speed.py                 # all 532 rows, 256 new tokens, all 300 MIA documents
    python benchmarks/eval_speed.py --quick         # 128 rows, 40 MIA documents: about a minute
    python benchmarks/eval_speed.py --threads 2 --batch-size 64

`--threads` defaults to 1: a tiny model's operations are too small to gain from a second thread, and when another
process shares the two cores, two threads per process wait on each other (measured 15-30x slower).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from hf_unlearn.metrics import (
    document_losses_one_at_a_time,
    document_token_stats,
    generate_completions,
    generate_one_at_a_time,
    lume_scores_from_generations,
)
from hf_unlearn.support.tiny import memorise, tiny_causal_lm, train_tokenizer
from hf_unlearn.data import read_jsonl

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def every_kth(rows: list, n: int) -> list:
    """`n` rows spread over the list (all tasks and kinds stay represented)."""
    if n >= len(rows):
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def flat_scores(result: dict, prefix: str = "") -> dict[str, float]:
    """Every number in a LUME result, keyed by its path (None cells left out)."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(flat_scores(value, f"{prefix}{key}/"))
        elif isinstance(value, list):
            out.update({f"{prefix}{key}[{i}]": v for i, v in enumerate(value)})
        elif value is not None:
            out[f"{prefix}{key}"] = value
    return out


def build_target(lume: Path, epochs: int) -> tuple[torch.nn.Module, object]:
    train = {split: read_jsonl(lume / f"{split}_train.jsonl") for split in ("forget", "retain")}
    tokenizer = train_tokenizer([r["input"] + r["output"] for rows in train.values() for r in rows], vocab_size=2048)
    model = tiny_causal_lm(tokenizer, arch="olmo", seed=0)
    memorised = [r for split in ("forget", "retain") for r in [r for r in train[split] if r["task"] == "Task2"][:8]]
    memorise(model, tokenizer, [r["input"] + r["output"] for r in memorised], epochs=epochs, learning_rate=3e-3)
    return model.eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HF_UNLEARN_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--quick", action="store_true", help="128 validation rows and 40 MIA documents")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=60, help="memorisation epochs of the tiny target model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lume = args.data / "lume"

    start = time.perf_counter()
    model, tokenizer = build_target(lume, args.epochs)
    print(f"target model built in {time.perf_counter() - start:.1f}s")

    forget = read_jsonl(lume / "forget_validation.jsonl")
    retain = read_jsonl(lume / "retain_validation.jsonl")
    if args.quick:
        forget, retain = every_kth(forget, 61), every_kth(retain, 67)
    prompts = [r["input"] for r in forget + retain]
    print(
        f"{len(prompts)} rows, max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}, "
        f"threads={args.threads}"
    )

    start = time.perf_counter()
    batched = generate_completions(model, tokenizer, prompts, args.max_new_tokens, batch_size=args.batch_size)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = generate_one_at_a_time(model, tokenizer, prompts, args.max_new_tokens)
    single_s = time.perf_counter() - start
    print(f"one at a time: {single_s:.1f}s   batched: {batched_s:.1f}s   speed-up: {single_s / batched_s:.2f}x")

    n = len(forget)
    scores_b = flat_scores(lume_scores_from_generations(forget, batched[:n], retain, batched[n:]))
    scores_s = flat_scores(lume_scores_from_generations(forget, single[:n], retain, single[n:]))
    same = sum(b == s for b, s in zip(batched, single))
    max_diff = max(abs(scores_b[k] - scores_s[k]) for k in scores_s)
    print(f"identical texts: {same}/{len(prompts)} ({same / len(prompts):.2%})   max score difference: {max_diff:.4g}")
    print(
        f"task score: batched {scores_b['harmonic-mean-task-aggregate']:.4f}   "
        f"one at a time {scores_s['harmonic-mean-task-aggregate']:.4f}"
    )

    docs = [r["document"] for name in ("member", "nonmember") for r in read_jsonl(lume / "mia" / f"{name}.jsonl")]
    if args.quick:
        docs = docs[:20] + docs[150:170]
    start = time.perf_counter()
    batched_losses = np.array([s.loss for s in document_token_stats(model, tokenizer, docs, batch_size=8)])
    mia_batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single_losses = np.array(document_losses_one_at_a_time(model, tokenizer, docs))
    mia_single_s = time.perf_counter() - start
    print(
        f"MIA: {len(docs)} documents, max |batched - one at a time| loss: "
        f"{np.abs(batched_losses - single_losses).max():.3g}   "
        f"(batched pass {mia_batched_s:.1f}s with all attack statistics, task loop {mia_single_s:.1f}s)"
    )


if __name__ == "__main__":
    main()
