"""Does the audit cost more than the unlearning it audits? `hf-unlearn unlearn` on SmolLM2 with 30 forget and 30
retain rows (issue #29: there, 10 minutes of training were followed by about 20 minutes of audit).

    python benchmarks/audit_cost.py               # writes benchmarks/results/audit_cost.md
    python benchmarks/audit_cost.py --memorised   # writes benchmarks/results/audit_cost_memorised.md

The job is the command a user runs (`hf_unlearn.unlearn.run_unlearn`, its defaults: NPO + NLL + KL, LoRA r 8, 5
epochs, every audit probe) on SmolLM2-135M-Instruct (`smollm2`, offline) with the first 30 rows of LUME's
forget_train and retain_train (real rows; without --memorised the model never memorised them).
No membership attack (no `--holdout`). With `--memorised` the job's model is SmolLM2 after it memorised those rows
(`hf_unlearn.target.build_target`: LoRA r = alpha = 32 on every linear layer, merged, lr 1e-3, at most 20 epochs,
stopping at a mean loss of 0.05; cached), as a deletion request's model knows its rows: its generations then write
much of the reference back, which generation proves in one pass (`generate_completions(drafts=)`;
`--drafts-only` times that alone). `--quantized-drafts-only` asks whether the quantization probes could draft
the rounded model's generation from the full-precision model's texts (rounding leaves most greedy text as it was):
it times the 8- and 4-bit model's generation with and without those drafts (SmolLM2, or with --memorised the
memorised model, stands for the unlearned model). Measured 2026-12-07 (30 rows, 1 thread, beside two other jobs):
int8 117 s without, 121 s with; int4 100 s, 120 s (20 and 16 of the 30 texts unchanged by the rounding): the rows
that rounding changes are the long ones that set a batch's length, so the audit does not use them.
It prints the training time, the time of everything after it (scoring the model before and after, the probes,
merging, the report) and their ratio (goal: at most 1), all from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "audit_cost.md"
SHARED = HERE.parent.parent / "shared" / "data"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=30, help="Forget rows, and as many retain rows.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the shared machine's fair share).")
    parser.add_argument("--no-write", action="store_true", help="Print only; do not write the results file.")
    parser.add_argument("--memorised", action="store_true",
                        help="Unlearn from SmolLM2 after it memorised the rows (built once, cached).")
    parser.add_argument("--drafts-only", action="store_true",
                        help="With --memorised: only time the memorised model's generation of the rows (256 new "
                        "tokens) with and without the references as drafts, in one process, and check the texts.")
    parser.add_argument("--quantized-drafts-only", action="store_true",
                        help="Only time the int8 and int4 model's generation of the rows with and without the "
                        "full-precision model's texts as drafts, in one process, and check the texts.")
    args = parser.parse_args(argv)

    import torch

    from hf_unlearn.unlearn import UnlearnArguments, run_unlearn

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="audit-cost-") as work:
        work = Path(work)
        for split in ("forget_train", "retain_train"):
            lines = (SHARED / "lume" / f"{split}.jsonl").read_text().splitlines()[: args.rows]
            (work / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        model = "smollm2"
        if args.memorised:
            from hf_unlearn.target import TargetRecipe, build_target

            files = [(name, str(work / f"{split}.jsonl")) for name, split in (("forget", "forget_train"),
                                                                              ("retain", "retain_train"))]
            model, record = build_target(TargetRecipe(base="smollm2"), files, log=lambda line: print(line, flush=True))
        if args.drafts_only:
            return drafts_check(model, [work / "forget_train.jsonl", work / "retain_train.jsonl"])
        if args.quantized_drafts_only:
            return quantized_drafts_check(model, [work / "forget_train.jsonl", work / "retain_train.jsonl"])
        started = time.time()
        result = run_unlearn(UnlearnArguments(model=model, forget=str(work / "forget_train.jsonl"),
                                              retain=str(work / "retain_train.jsonl"), output_dir=str(work / "out"),
                                              threads=args.threads),
                             progress=lambda line: print(line, flush=True))
        total = time.time() - started
    train = result["train_seconds"]
    after = result["seconds"] - train
    ratio = after / train
    summary = {"rows": args.rows, "memorised": args.memorised, "train_seconds": round(train, 1),
               "after_training_seconds": round(after, 1),
               "ratio": round(ratio, 3), "total_seconds": round(total, 1), "probes": list(result["audit"]["probes"]),
               "steps": result["training"]["steps"], "audit_seconds": result["audit"]["seconds"]}
    print(json.dumps(summary))
    if not args.no_write:
        (RESULTS.with_name("audit_cost_memorised.md") if args.memorised else RESULTS).write_text(
            "# Audit cost against training cost\n\n"
            f"`python benchmarks/audit_cost.py{' --memorised' if args.memorised else ''}` (benchmarks/audit_cost.py; "
            "its docstring says what runs), "
            f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} torch "
            f"thread(s), torch {torch.__version__}: `hf-unlearn unlearn` on SmolLM2-135M-Instruct"
            f"{' after it memorised the rows (--memorised)' if args.memorised else ''} with {args.rows} "
            f"forget and {args.rows} retain LUME rows, its defaults, probes {', '.join(summary['probes'])}.\n\n"
            "| training | everything after it (scores before/after, probes, merge, report) | ratio | goal |\n"
            "|---:|---:|---:|---|\n"
            f"| {train:.0f} s ({summary['steps']} steps) | {after:.0f} s | {ratio:.2f} | "
            f"{'PASS' if ratio <= 1 else 'FAIL'} (<= 1) |\n\n"
            "The audit's stages (seconds; the rest of the time after training is merging, saving and the report): "
            + ", ".join(f"{k} {v:.0f}" for k, v in summary["audit_seconds"].items()) + ".\n")
    return summary


def drafts_check(model: str, files) -> dict:
    """Generation of the rows as the task scores them (256 new tokens), without and with the references as drafts."""
    import torch

    from hf_unlearn.data.lume import read_jsonl
    from hf_unlearn.metrics import generate_completions
    from hf_unlearn.pretrained import load_model_and_tokenizer

    net, tokenizer = load_model_and_tokenizer(model, dtype=torch.float32)
    rows = [row for path in files for row in read_jsonl(path)]
    prompts, answers = [r["input"] for r in rows], [r["output"] for r in rows]
    seconds, texts = {}, {}
    for name, drafts in (("without drafts", None), ("with drafts", answers)):
        started = time.time()
        texts[name] = generate_completions(net, tokenizer, prompts, 256, batch_size=16, drafts=drafts)
        seconds[name] = round(time.time() - started, 1)
    summary = {"rows": len(rows), "seconds": seconds, "same_texts": texts["without drafts"] == texts["with drafts"],
               "written_back": sum(t.strip() == a.strip() for t, a in zip(texts["without drafts"], answers))}
    print(json.dumps(summary))
    return summary


def quantized_drafts_check(model: str, files) -> dict:
    """The rounded model's generation (256 new tokens) without and with the full-precision model's texts as drafts,
    as the audit's quantization probes run it."""
    import copy

    import torch

    from hf_unlearn.audit.quantization import quantize_model
    from hf_unlearn.data.lume import read_jsonl
    from hf_unlearn.metrics import generate_completions
    from hf_unlearn.pretrained import load_model_and_tokenizer

    net, tokenizer = load_model_and_tokenizer(model, dtype=torch.float32)
    prompts = [row["input"] for path in files for row in read_jsonl(path)]
    started = time.time()
    full = generate_completions(net, tokenizer, prompts, 256, batch_size=16)
    summary = {"rows": len(prompts), "full_precision_seconds": round(time.time() - started, 1)}
    for scheme in ("int8", "int4"):
        rounded = copy.deepcopy(net)
        quantize_model(rounded, scheme)
        seconds, texts = {}, {}
        for name, drafts in (("without drafts", None), ("with drafts", full)):
            started = time.time()
            texts[name] = generate_completions(rounded, tokenizer, prompts, 256, batch_size=16, drafts=drafts)
            seconds[name] = round(time.time() - started, 1)
        summary[scheme] = {"seconds": seconds, "same_texts": texts["without drafts"] == texts["with drafts"],
                           "unchanged_by_rounding": sum(a == b for a, b in zip(full, texts["without drafts"]))}
        del rounded
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
