"""The check to run when a GPU is lent (issue #33): what the project does on a CUDA device, in under 8 minutes.

    python benchmarks/gpu_check.py                   # on a machine with a CUDA device: writes results/gpu_check.md
    python benchmarks/gpu_check.py --cpu-smoke       # the same code on this CPU at the smallest sizes (no file)

1. **Step cost in bf16** on SmolLM2-135M-Instruct: `benchmarks/step_cost.py`'s five variants ((a) GD, (b) NPO + NLL
   + KL with the adapter-disabled reference, (c) with precomputed reference log-probs, (d) with a deep-copied
   reference, (e) full fine-tuning), each variant's peak GPU memory in its own process and the step times
   interleaved, with the ratios and their goals.
2. **Evaluation throughput**: batched generation (`generate_completions`) against the task's one-row-at-a-time loop on
   LUME validation rows, SmolLM2 in bf16; and the batched MIA statistics.
3. **One selective SmolLM2 run** of `hf-unlearn unlearn`: the SmolLM2 demo memorises its synthetic people (bf16
   weights would not memorise; the demo trains in float32), then `hf_unlearn.unlearn.run_unlearn` unlearns them at
   its defaults with the int8 probe, reporting before -> after and the selectivity bar.
4. **Peak GPU memory** of each part (`torch.cuda.max_memory_allocated`).

Every part's time is in the report; a part that fails is reported with its error and the others still run. On a
machine without a CUDA device it says so and exits with status 2 (`--cpu-smoke` runs the same code paths on the CPU
with a tiny model, to keep this script working between the rare sessions that have a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "gpu_check.md"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


def device_line() -> str:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def part_step_cost(smoke: bool, data: Path) -> dict:
    """benchmarks/step_cost.py's five variants, bf16 on the GPU (float32 tiny model in the smoke run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "step_cost.json"
        cmd = [sys.executable, str(HERE / "step_cost.py"), "--sizes", "tiny" if smoke else "smollm2",
               "--variants", "a", "b", "c", "d", "e", "--reps", "1" if smoke else "5", "--no-write",
               "--dtype", "float32" if smoke else "bfloat16", "--data", str(data), "--json", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(out.read_text())


def part_eval_throughput(smoke: bool, data: Path) -> dict:
    """Batched against one-at-a-time generation on LUME validation rows, and the batched MIA pass."""
    import torch

    from hf_unlearn.metrics import document_token_stats, generate_completions, generate_one_at_a_time

    model, tokenizer = _model(smoke, dtype=torch.bfloat16)
    rows = [json.loads(line) for line in (data / "lume" / "forget_validation.jsonl").read_text().splitlines()]
    rows = rows[: 8 if smoke else 64]
    prompts = [r["input"] for r in rows]
    new = 16 if smoke else 128
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    start = time.perf_counter()
    batched = generate_completions(model, tokenizer, prompts, new, batch_size=32)
    sync()
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = generate_one_at_a_time(model, tokenizer, prompts[: len(prompts) // 4], new)  # a quarter, scaled up
    sync()
    single_s = (time.perf_counter() - start) * len(prompts) / max(1, len(prompts) // 4)
    docs = [json.loads(line)["document"] for line in (data / "lume" / "mia" / "member.jsonl").read_text().splitlines()]
    docs = docs[: 8 if smoke else 100]
    start = time.perf_counter()
    document_token_stats(model, tokenizer, docs, batch_size=16)
    sync()
    mia_s = time.perf_counter() - start
    same = sum(b == s for b, s in zip(batched, single))
    return {"rows": len(prompts), "max_new_tokens": new, "batched_s": batched_s, "one_at_a_time_s": single_s,
            "speed_up": single_s / batched_s, "identical_texts": f"{same}/{len(single)}",
            "mia_documents": len(docs), "mia_s": mia_s}


def part_unlearn(smoke: bool) -> dict:
    """The SmolLM2 demo's memorised target (its synthetic people), then `hf-unlearn unlearn` on it at its defaults."""
    from hf_unlearn.support.demo import run_demo
    from hf_unlearn.unlearn import UnlearnArguments, run_unlearn

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        demo = run_demo(output_dir=str(Path(tmp) / "demo"), quick=smoke, model="tiny" if smoke else "smollm2")
        memorise_s = time.perf_counter() - start
        data = Path(demo["paths"]["data"])
        start = time.perf_counter()
        result = run_unlearn(UnlearnArguments(
            model=demo["paths"]["target_model"], forget=str(data / "forget_train.jsonl"),
            retain=str(data / "retain_train.jsonl"), mia=str(data / "mia"), output_dir=str(Path(tmp) / "deletion"),
            probes="int8", merge=False, **({"num_train_epochs": 1, "max_new_tokens": 16} if smoke else {})),
            progress=lambda line: None)
        unlearn_s = time.perf_counter() - start
    before, after = result["scores"]["before"], result["scores"]["after"]
    keys = ("forget/regurgitation", "forget/knowledge", "retain/regurgitation", "retain/knowledge", "task_score",
            "mia/auc")
    fb, fa = before["forget/regurgitation"], after["forget/regurgitation"]
    kept = all(before[k] - after[k] <= 0.1 for k in ("retain/regurgitation", "retain/knowledge") if k in before)
    return {"demo_s": memorise_s, "unlearn_s": unlearn_s, "train_s": result["train_seconds"],
            "scores": {k: [before.get(k), after.get(k)] for k in keys}, "verdict": result["verdict"]["line"],
            "selective": fa <= 0.5 * fb and kept}


def _model(smoke: bool, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn.pretrained import resolve_model_path

    if smoke:
        from hf_unlearn.support.tiny import tiny_causal_lm, train_tokenizer

        tokenizer = train_tokenizer(["a small vocabulary for the smoke run of the GPU check"] * 20, vocab_size=300)
        model = tiny_causal_lm(tokenizer, hidden_size=32, num_hidden_layers=1)
    else:
        path = resolve_model_path("smollm2")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model.cuda()
    return model.eval(), tokenizer


def run_part(name: str, fn, *args) -> dict:
    """One part: its result, seconds and peak GPU memory, or its error (the other parts still run)."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        out = {"result": fn(*args)}
    except Exception as error:  # reported, not fatal: the lent time is short and the other parts still count
        out = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=4)}
    out["seconds"] = time.perf_counter() - start
    if cuda:
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"[gpu_check] {name}: {out['seconds']:.0f} s" + (f", error {out['error']}" if "error" in out else ""),
          flush=True)
    return out


def _step_cost_lines(part: dict) -> list[str]:
    results = next(iter(part["result"]["results"].values()))
    lines = ["| variant | peak GPU memory (MiB) | step time (s, median) |", "|---|---:|---:|"]
    lines += [f"| ({v}) | {r['memory_mb']:.0f} | {r['time_s']:.4f} |" for v, r in results.items()]
    lines += ["", "| ratio | value | verdict |", "|---|---:|---|"]
    return lines + [f"| {n} | {v:.2f} | {verdict} |" for n, v, verdict in next(iter(part["result"]["ratios"].values()))]


def _eval_lines(part: dict) -> list[str]:
    r = part["result"]
    return [f"{r['rows']} LUME validation rows, {r['max_new_tokens']} new tokens: batched {r['batched_s']:.1f} s, "
            f"one at a time {r['one_at_a_time_s']:.1f} s (a quarter of the rows, scaled), speed-up "
            f"{r['speed_up']:.1f}x, identical texts {r['identical_texts']}; MIA statistics of "
            f"{r['mia_documents']} documents in {r['mia_s']:.1f} s; peak {part.get('peak_gpu_mib', 0):.0f} MiB."]


def _unlearn_lines(part: dict) -> list[str]:
    r = part["result"]
    lines = [f"The SmolLM2 demo's memorised target ({r['demo_s']:.0f} s), then `run_unlearn` at its defaults with "
             f"the int8 probe ({r['unlearn_s']:.0f} s, {r['train_s']:.0f} s of training); peak "
             f"{part.get('peak_gpu_mib', 0):.0f} MiB. Selective (forget halved, retain within 0.1): "
             f"{'yes' if r['selective'] else 'no'}.", "", "| score | before | after |", "|---|---:|---:|"]
    lines += [f"| {k} | {b if b is None else f'{b:.3f}'} | {a if a is None else f'{a:.3f}'} |"
              for k, (b, a) in r["scores"].items()]
    return lines + ["", r["verdict"]]


SECTIONS = [("step_cost", "Step cost, SmolLM2-135M-Instruct in bf16", _step_cost_lines),
            ("eval_throughput", "Evaluation throughput, SmolLM2 in bf16", _eval_lines),
            ("unlearn", "One SmolLM2 run of `hf-unlearn unlearn`", _unlearn_lines)]


def report(parts: dict, total_s: float) -> str:
    lines = ["# GPU check", "", f"`python benchmarks/gpu_check.py` on {device_line()}, {platform.node() or 'a lent'} "
             f"machine, {time.strftime('%Y-%m-%d')}: {total_s:.0f} s in all.", ""]
    for key, title, body in SECTIONS:  # a part that failed says so; the others are reported all the same
        part = parts[key]
        lines += [f"## {title}", "", *([f"Failed: `{part['error']}`"] if "error" in part else body(part)), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HF_UNLEARN_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--cpu-smoke", action="store_true", help="run every part on this CPU at the smallest sizes "
                        "(checks the script; writes no results file)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the report (default benchmarks/results/"
                        "gpu_check.md)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("benchmarks/gpu_check.py needs a CUDA device (torch.cuda.is_available() is False here); "
              "--cpu-smoke runs its code on the CPU at the smallest sizes", file=sys.stderr)
        return 2
    start = time.perf_counter()
    parts = {"step_cost": run_part("step cost", part_step_cost, args.cpu_smoke, args.data),
             "eval_throughput": run_part("eval throughput", part_eval_throughput, args.cpu_smoke, args.data),
             "unlearn": run_part("unlearn", part_unlearn, args.cpu_smoke)}
    text = report(parts, time.perf_counter() - start)
    print("\n" + text)
    if not args.cpu_smoke:
        args.output.write_text(text + "\n")
        args.output.with_suffix(".json").write_text(json.dumps(parts, indent=1, default=str) + "\n")
        print(f"wrote {args.output}")
    failed = [name for name, part in parts.items() if "error" in part]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
