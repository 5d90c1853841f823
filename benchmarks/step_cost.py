"""What one unlearning step costs in memory and time, and what the no-copy reference saves.

One tiny OLMo-architecture model (built from a config, with a byte-level BPE vocabulary of about 27k tokens trained
on the LUME train splits), the same 4 forget + 4 retain real LUME rows, the same LoRA (r=8, all linear layers), and
five steps through the real trainer code (`UnlearningTrainer.training_step`: compute_loss and backward, then the
optimizer step):

- (a) gradient difference with LoRA, no reference pass;
- (b) NPO + retain NLL + retain KL with LoRA, the reference being the model with its adapter disabled;
- (c) (b) with `precompute_ref_log_probs=True` (only the KL's reference pass is left in the step);
- (d) (b) with a deep-copied frozen reference model passed as `ref_model=` (how open-unlearning does it);
- (e) full fine-tuning (no LoRA) of (b)'s loss with a deep-copied reference;
- (f) the anchored method (issue #28) at its defaults: the same 4 forget rows as whole documents, 4 other forget rows
  as calibration documents (`anchor_calibration_batch` of them join each step's pass, with the hold), retain NLL +
  KL as in (b);
- (g) (b) on the same whole documents as (f) (`forget_unit="documents"`: every token carries loss), so that (f)/(g)
  is the cost of the method itself and not of scoring every token of a document;
- (h) (f) at fixed levels without the hold; (i) `pre_finetuning_distill` (a copy of the model standing in for the
  one before fine-tuning); (j) (i) with the NLL level and the Min-K%++ level as issue #28's runs use them (distill 3,
  level 1, z-level 2, the calibration documents measured at the start); (k) (j) with `level_shift="current"` (4
  calibration documents measured again a step, no gradient); (l) (k) with the Min-K%++ level a band; (m) (l) with the
  KL hold on 4 calibration documents a step (the setting of issue #28's hold runs).

Memory: each variant in its own fresh process (a process's peak RSS never goes down), the peak RSS (VmHWM) minus
the RSS just before the model is built: weights, copies, optimizer state and the step's activations, without the
interpreter and libraries (on a GPU: `torch.cuda.max_memory_allocated`). Time: the median of `--reps` steps after
`--warmup`, all variants' steps interleaved in one more process.

    python benchmarks/step_cost.py                  # both sizes, writes benchmarks/results/step_cost.md
    python benchmarks/step_cost.py --sizes small --reps 3 --no-write
    python benchmarks/step_cost.py --variant b --size small   # one measurement, printed as JSON
    python benchmarks/step_cost.py --sizes smollm2  # SmolLM2-135M-Instruct: writes results/step_cost_smollm2.md

`--threads` defaults to 1 (see benchmarks/eval_speed.py: two threads per process stall when the cores are shared).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "step_cost.md"

# hidden size, layers, heads: about 5M and 40M parameters with the ~27k vocabulary (embeddings and lm_head dominate
# the small one, as they do for 1B-scale models with a 50k-100k vocabulary relative to their width).
SIZES = {"small": (96, 4, 4), "large": (512, 4, 8), "tiny": (16, 1, 2)}  # tiny: the smoke test only
# A real pretrained model instead of one built from a config: SmolLM2-135M-Instruct (hf_unlearn.pretrained), whose
# 49k-row tied output layer is where computing the reference logits at answer positions only pays off.
PRETRAINED = {"smollm2": "smollm2"}
DTYPE = os.environ.get("HF_UNLEARN_STEP_DTYPE", "float32")  # set by --dtype, for this process and its children
VARIANTS = {
    "a": "gd, LoRA, no reference",
    "b": "npo + retain NLL + KL, LoRA, adapter-disabled reference",
    "c": "(b) with precompute_ref_log_probs",
    "d": "(b) with a deep-copied reference model",
    "e": "full fine-tuning (b) with a deep-copied reference",
    "f": "anchored on whole documents + retain NLL + KL, LoRA, calibration documents",
    "g": "(b) on whole documents",
    "h": "(f) with the band at the start level and no hold (no calibration pass during training)",
    "i": "pre_finetuning_distill on whole documents + retain NLL + KL, a pre-fine-tuning model (a copy here)",
    "j": "(i) with the NLL level and the Min-K%++ level (calibration documents, issue #28's setting)",
    "k": "(j) with the levels' shift re-measured under the current model (4 calibration documents a step)",
    "l": "(k) with the Min-K%++ level a band, the calibration scores' 0.4-0.6 quantiles (level weight 2)",
    "m": "(l) with the KL hold on 4 calibration documents a step (hold weight 1)",
    "n": "(m) with the hold (and the levels' re-measuring) on 2 calibration documents a step",
}
DISTILLED = ("i", "j", "k", "l", "m", "n")  # the pre_finetuning_distill variants (a pre-fine-tuning model each)
# (numerator, denominator, measure, goal or None, what it shows)
GOALS = [
    ("b", "a", "memory", 1.10, "reference pass adds little memory"),
    ("b", "a", "time", 1.40, "reference pass adds little time"),
    ("c", "a", "time", 1.25, "precomputed NPO reference"),
    ("d", "b", "memory", None, "the copy the adapter trick avoids"),
    ("e", "b", "memory", None, "full fine-tuning with a copy"),
    ("f", "g", "time", 1.30, "the unseen-level method against NPO + NLL + KL, on the same documents"),
    ("f", "b", "time", None, "(f) against (b) on rows: documents carry loss on every token"),
    ("h", "g", "time", 1.30, "the unseen-level method at fixed levels against NPO + NLL + KL, on the same documents"),
    ("i", "g", "time", 1.30, "distillation toward the pre-fine-tuning model against NPO + NLL + KL, same documents"),
    ("j", "g", "time", 1.30, "distillation with both levels against NPO + NLL + KL, on the same documents"),
    ("k", "g", "time", 1.30, "distillation with re-measured levels against NPO + NLL + KL, on the same documents"),
    ("l", "g", "time", 1.30, "distillation with the Min-K%++ band against NPO + NLL + KL, on the same documents"),
    ("m", "g", "time", 1.30, "the band with the hold against NPO + NLL + KL, on the same documents"),
    ("n", "g", "time", 1.30, "the band with a hold on 2 documents against NPO + NLL + KL, on the same documents"),
]


def memory_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: now, VmHWM: the process's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def pick_rows(rows: list[dict], n: int, tokenizer, max_tokens: int) -> list[dict]:
    """`n` rows spread over the split, each at most `max_tokens` long (prompt + answer), all tasks represented."""
    short = [r for r in rows if len(tokenizer(r["input"] + r["output"])["input_ids"]) < max_tokens]
    by_task: dict[str, list[dict]] = {}
    for r in short:
        by_task.setdefault(r["task"], []).append(r)
    tasks = sorted(by_task)
    return [by_task[tasks[i % len(tasks)]][i // len(tasks) * 7] for i in range(n)]


def load_rows(data: Path, max_tokens: int, size: str = "small"):
    """The tokenizer (trained on the LUME train splits, or the pretrained model's) and the benchmark's 4 forget and
    4 retain rows."""
    from datasets import Dataset

    from hf_unlearn.data import read_jsonl
    from hf_unlearn.support.tiny import train_tokenizer

    train = {s: read_jsonl(data / "lume" / f"{s}_train.jsonl") for s in ("forget", "retain")}
    if size in PRETRAINED:
        from transformers import AutoTokenizer

        from hf_unlearn.pretrained import resolve_model_path

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(PRETRAINED[size]))
    else:
        tokenizer = train_tokenizer([r["input"] + r["output"] for rows in train.values() for r in rows],
                                    vocab_size=32768)
    rows = [Dataset.from_list(pick_rows(train[s], 4, tokenizer, max_tokens)) for s in ("forget", "retain")]
    # (f)'s calibration documents: 4 other forget rows of the same kinds, as whole texts
    picked = {r["id"] for r in rows[0]}
    others = [r for r in pick_rows(train["forget"], 8, tokenizer, max_tokens) if r["id"] not in picked][:4]
    calibration = [r["input"] + " " + r["output"] for r in others]
    return tokenizer, *rows, calibration


_SCRATCH: list[tempfile.TemporaryDirectory] = []


def _scratch_dir() -> str:
    """One trainer output folder per process (nothing is saved there), removed when the process exits."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="step_cost_"))
    return _SCRATCH[0].name


def build(variant: str, dims: tuple[int, int, int] | str, rows, steps: int, max_tokens: int):
    """The variant's trainer (optimizer created, reference log-probs precomputed for (c)) and its one batch."""
    import torch
    from peft import LoraConfig, get_peft_model

    from hf_unlearn import UnlearningConfig, UnlearningTrainer
    from hf_unlearn.support.tiny import tiny_causal_lm

    tokenizer, forget, retain, calibration = rows
    cuda = torch.cuda.is_available()
    if isinstance(dims, str):  # a pretrained model's name
        from transformers import AutoModelForCausalLM

        from hf_unlearn.pretrained import resolve_model_path

        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(dims), dtype=torch.float32)
    else:
        hidden, layers, heads = dims
        model = tiny_causal_lm(tokenizer, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads)
    model.to(getattr(torch, DTYPE))  # --dtype (bfloat16 on a GPU: benchmarks/gpu_check.py)
    if cuda:
        model.cuda()
    ref_model = copy.deepcopy(model) if variant in ("d", "e") else None
    # stands in for the model before fine-tuning
    pre_model = copy.deepcopy(model) if variant in DISTILLED else None
    if variant != "e":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules="all-linear"))
    calibrated = variant in ("f", "h", "j", "k", "l", "m", "n")  # reads the calibration documents
    documents = variant in ("f", "g", "h", "i", "j", "k", "l", "m", "n")
    if documents:  # the same rows, as whole documents
        forget = forget.map(lambda r: {"text": r["input"] + " " + r["output"]}, remove_columns=forget.column_names)
    method = {"a": "gd", "f": "anchored", "h": "anchored",
              **dict.fromkeys(DISTILLED, "pre_finetuning_distill")}.get(variant, "npo")
    band = dict(distill_weight=3.0, level_weight=2.0, z_level_weight=2.0, level_shift="current",
                z_level_target="band", z_band_low=0.4, z_band_high=0.6)  # (l); (m), (n) add the hold
    fixed = (dict(anchor_levels="start", anchor_hold_weight=0.0) if variant == "h" else
             dict(distill_weight=3.0, level_weight=1.0, z_level_weight=2.0) if variant == "j" else
             dict(distill_weight=3.0, level_weight=1.0, z_level_weight=2.0, level_shift="current") if variant == "k"
             else band if variant == "l" else {**band, "hold_weight": 1.0} if variant == "m"
             else {**band, "hold_weight": 1.0, "hold_batch": 2} if variant == "n" else {})
    config = UnlearningConfig(
        output_dir=_scratch_dir(),
        method=method,
        forget_unit="documents" if documents else "rows",
        **fixed,
        retain_nll_weight=1.0,
        retain_kl_weight=0.0 if variant == "a" else 1.0,
        precompute_ref_log_probs=variant == "c",
        per_device_train_batch_size=4,
        learning_rate=1e-5,
        max_steps=steps,
        max_length=max_tokens,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=not cuda,
        seed=0,
    )
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                                processing_class=tokenizer, ref_model=ref_model,
                                calibration_dataset=calibration if calibrated else None, pre_finetuning_model=pre_model)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    if variant == "c":
        trainer.precompute_reference_log_probs()
    if calibrated:  # what on_train_begin does: the calibration documents' starting levels
        trainer.calibration.measure_all(trainer._policy, tokenizer.pad_token_id, pre_model)
    return trainer, next(iter(trainer.get_train_dataloader()))


def step(trainer, batch) -> float:
    """One optimisation step as the training loop runs it (compute_loss, backward, optimizer step); seconds."""
    import torch

    _, counts = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
    start = time.perf_counter()
    trainer.training_step(trainer.model, batch, counts)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(variant: str, size: str, data: Path, reps: int, warmup: int, max_tokens: int) -> dict:
    """Peak memory of one variant (run it in a fresh process): build, then `warmup + reps` steps."""
    import torch

    cuda = torch.cuda.is_available()
    rows = load_rows(data, max_tokens, size)
    # A throwaway trainer and step on a minute model first, so what the libraries load on first use (accelerate,
    # deepspeed's probe, autograd and optimizer code) is in the baseline, not in the measured memory; then the
    # process's peak RSS is reset to the current RSS (Linux: 5 > /proc/self/clear_refs).
    step(*build(variant, (8, 1, 1), rows, 1, max_tokens))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    baseline_kb = memory_kb("VmRSS")
    if cuda:
        torch.cuda.reset_peak_memory_stats()  # the weights and copies come after this, so the peak includes them
    trainer, batch = build(variant, PRETRAINED.get(size) or SIZES[size], rows, warmup + reps, max_tokens)
    times = [step(trainer, batch) for _ in range(warmup + reps)][warmup:]
    result = {
        "variant": variant,
        "size": size,
        "params": sum(p.numel() for name, p in trainer.model.named_parameters() if "lora_" not in name),
        "vocab": len(rows[0]),
        "width": [batch["forget_input_ids"].shape[1], batch["retain_input_ids"].shape[1]],
        "answer_tokens": int(sum(batch[f"{s}_labels"][:, 1:].ne(-100).sum() for s in ("forget", "retain"))),
        "time_s": statistics.median(times),
        "memory_mb": (memory_kb("VmHWM") - baseline_kb) / 1024,
        "peak_rss_mb": memory_kb("VmHWM") / 1024,
        "device": "cuda" if cuda else "cpu",
    }
    if cuda:
        result["cpu_memory_mb"] = result["memory_mb"]
        result["memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def time_interleaved(variants: list[str], size: str, data: Path, reps: int, warmup: int, max_tokens: int) -> dict:
    """Median step time of each variant, their steps interleaved in one process: on shared cores the load changes
    from minute to minute, and interleaving makes a change hit every variant alike, so the ratios stay fair."""
    rows = load_rows(data, max_tokens, size)
    built = {v: build(v, PRETRAINED.get(size) or SIZES[size], rows, warmup + reps, max_tokens) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(warmup + reps):
        for v, (trainer, batch) in built.items():
            seconds = step(trainer, batch)
            if i >= warmup:
                times[v].append(seconds)
    return {v: {"time_s": statistics.median(t), "times_s": t} for v, t in times.items()}


def run_child(args, *extra: str) -> dict:
    """This script in a fresh process (its peak RSS is its own); its last line of stdout, as JSON."""
    cmd = [sys.executable, __file__, *extra, "--reps", str(args.reps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--data", str(args.data), "--max-tokens", str(args.max_tokens)]
    # A fixed mmap threshold: glibc otherwise raises it as large blocks are freed and keeps later tensors in a heap
    # it does not give back, so the peak RSS would measure the allocator's history rather than the live tensors.
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ratio_rows(results: dict[str, dict]) -> list[tuple[str, float, str]]:
    """Each ratio of GOALS with its verdict (PASS/FAIL against the goal, or the factor it shows)."""
    rows = []
    for num, den, what, goal, note in GOALS:
        if num not in results or den not in results:  # a run of some variants only
            continue
        key = "memory_mb" if what == "memory" else "time_s"
        value = results[num][key] / results[den][key]
        verdict = ("PASS" if value <= goal else "FAIL") + f" (goal <= {goal:.2f})" if goal else note
        rows.append((f"({num})/({den}) {what}", value, verdict))
    return rows


def tables(all_results: dict[str, dict[str, dict]]) -> str:
    lines = []
    for size, results in all_results.items():
        r = next(iter(results.values()))  # the model and batch are the same for every variant
        lines += [
            f"### {size}: {r['params'] / 1e6:.1f}M parameters, vocabulary {r['vocab']}, forget/retain batch width "
            f"{r['width'][0]}/{r['width'][1]} tokens, {r['answer_tokens']} answer tokens, {r['device']}",
            "",
            "| variant | memory (MB) | peak RSS (MB) | step time (s, median) |",
            "|---|---|---|---|",
        ]
        for v, res in results.items():
            lines.append(f"| ({v}) {VARIANTS[v]} | {res['memory_mb']:.1f} | {res['peak_rss_mb']:.0f} | "
                         f"{res['time_s']:.3f} |")
        lines += ["", "| ratio | value | verdict |", "|---|---|---|"]
        lines += [f"| {name} | {value:.2f} | {verdict} |" for name, value, verdict in ratio_rows(results)]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HF_UNLEARN_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=[*SIZES, *PRETRAINED])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--reps", type=int, default=5, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=160, help="rows longer than this are not picked")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(Path.cwd())}"
                        if RESULTS.is_relative_to(Path.cwd()) else "do not write the results file")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=[*SIZES, *PRETRAINED], help=argparse.SUPPRESS)
    parser.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default=DTYPE, choices=["float32", "bfloat16", "float16"],
                        help="weights' dtype (default float32; benchmarks/gpu_check.py uses bfloat16 on a GPU)")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = parser.parse_args()
    os.environ["HF_UNLEARN_STEP_DTYPE"] = args.dtype  # read by the child processes
    globals()["DTYPE"] = args.dtype

    if args.size:  # a child process: one measurement, as the last line of stdout
        import torch

        torch.set_num_threads(args.threads)
        common = (args.size, args.data, args.reps, args.warmup, args.max_tokens)
        if args.timing:
            print(json.dumps(time_interleaved(args.variants, *common)))
        else:
            print(json.dumps(measure(args.variant, *common)))
        return

    start = time.perf_counter()
    all_results: dict[str, dict[str, dict]] = {}
    for size in args.sizes:
        all_results[size] = {v: run_child(args, "--variant", v, "--size", size) for v in args.variants}
        timed = run_child(args, "--timing", "--size", size, "--variants", *args.variants)
        for v, r in all_results[size].items():
            r.update(timed[v])
            print(f"{size} ({v}): {r['memory_mb']:.1f} MB, {r['time_s']:.3f} s/step", flush=True)
    text = tables(all_results)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps({"dtype": args.dtype, "results": all_results,
                                         "ratios": {size: ratio_rows(r) for size, r in all_results.items()}},
                                        indent=1))
    elapsed = time.perf_counter() - start
    results_path = RESULTS
    if len(args.sizes) == 1 and args.sizes[0] in PRETRAINED:  # the pretrained model's table goes in its own file
        results_path = RESULTS.with_name(f"step_cost_{args.sizes[0]}.md")
    if not args.no_write and set(args.variants) == set(VARIANTS):
        machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {__import__('torch').__version__}"
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(
            "# Step cost: memory and time of one unlearning step\n\n"
            f"`python benchmarks/step_cost.py --sizes {' '.join(args.sizes)} --reps {args.reps} --threads "
            f"{args.threads}` on {machine} "
            f"({datetime.date.today().isoformat()}, {elapsed:.0f} s in all). Memory: peak RSS minus the RSS "
            "before the model is built (weights, reference copy, optimizer state, activations), each variant in its own "
            f"process. Time: median of {args.reps} steps after {args.warmup} warm-up step(s), the variants' steps "
            "interleaved in one process so that the changing load of the shared cores hits them alike.\n\n" + text
        )
        print(f"wrote {results_path}")


if __name__ == "__main__":
    main()
