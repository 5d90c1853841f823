"""Does unlearning on the real SmolLM2 hold when the forgotten questions are asked differently? TOFU through
`hf-unlearn unlearn`.

    python benchmarks/audit_tofu_smollm2.py                  # about 30 minutes on 2 cores (the target is cached)

LUME rows carry no paraphrases and the tiny TOFU target of `benchmarks/audit.py --model tofu` cannot answer
paraphrased questions (it memorised strings), so this run gives the paraphrase probe a model that can:

1. **Target** (`hf_unlearn.target.build_target` with `RECIPE`): SmolLM2-135M-Instruct (`hf_unlearn.pretrained`,
   offline) memorises TOFU's forget01 (the last 2 of its 200 fictitious authors, 40 questions) and the first 2
   authors (40 questions, the retain set) through a LoRA adapter that is then merged: r = alpha = 32 on all linear
   layers, AdamW lr 1e-3 with a cosine schedule, at most 20 epochs of 8 rows, stopping at a mean loss of 0.05 (the
   SmolLM2 demo's recipe). Cached under the cache root, keyed by these settings.
2. **Unlearning and audit**: `hf-unlearn unlearn` at its defaults (NPO + retain NLL + KL, LoRA r 8), the forget01
   rows (with TOFU's `paraphrased_question`) against the retain authors, holdout01 as the MIA nonmembers; its audit
   runs every probe: int8, int4, relearning on one author measured on the other, questions cut to 50% and 25%, and the
   paraphrased questions. Answers are scored by ROUGE-L recall (TOFU's own metric; the rows are
   `benchmarks/audit.py`'s `tofu_rows`).

It writes `benchmarks/results/audit_tofu_smollm2.{md,json,png}`: the job's report and the audit (numbers, verdicts and
settings; no row text). The row files and the job's folder (adapter, merged model) live in a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("audit_benchmark", HERE / "audit.py")
audit_benchmark = importlib.util.module_from_spec(_spec)
sys.modules["audit_benchmark"] = audit_benchmark
_spec.loader.exec_module(audit_benchmark)


from hf_unlearn.target import TargetRecipe  # noqa: E402

# LoRA r = alpha = 32 on all linear layers, merged; AdamW lr 1e-3, cosine, 5% warm-up, batches of 8 by length, at
# most 20 epochs, stopping at a mean loss of 0.05 (the SmolLM2 demo's recipe)
RECIPE = TargetRecipe(base="smollm2", lora_r=32, learning_rate=1e-3, epochs=20, batch_size=8, stop_loss=0.05)


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rows for the job, readable by their owner only (they hold the forget text)."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def write_markdown(record: dict, out_dir: Path) -> None:
    """`audit_tofu_smollm2.md` from the record: the job's report and the audit, their verdicts judged again from the
    stored scores (`hf_unlearn.audit.judge`)."""
    from hf_unlearn.audit import audit_markdown, judge
    from hf_unlearn.unlearn import format_report

    audit = judge(record["audit"])
    result = {**record["unlearn"], "paths": {},
              "audit": {"probes": {k: {"verdict": v["verdict"]} for k, v in audit["probes"].items()}}}
    losses, target = record["target"]["memorise_losses"], record["target"]
    (out_dir / "audit_tofu_smollm2.md").write_text("\n".join([
        "# TOFU on SmolLM2-135M-Instruct: `hf-unlearn unlearn` and its audit", "",
        f"`python benchmarks/audit_tofu_smollm2.py{''.join(' ' + a for a in record['argv'])}` (see its docstring). "
        f"{record['date']}, a 2-core CPU machine, {record['threads']} torch thread(s). Target: memorised in "
        f"{target['memorise_seconds']:.0f} s (mean loss {losses[0]:.3f} -> {losses[-1]:.4f}); the job (training, "
        f"scoring and audit) took {record['job_seconds'] / 60:.1f} min.", "",
        "## The job's report", "", "```", format_report(result).strip(), "```", "",
        "## The audit", "", audit_markdown(audit).split("\n", 2)[2].replace("## ", "### ").strip(), "",
        "![audit](audit_tofu_smollm2.png)", ""]))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-dir", default=str(HERE / "results"))
    parser.add_argument("--unlearn-arg", action="append", default=[],
                        help="A further `hf-unlearn unlearn` option (repeatable), e.g. --unlearn-arg=--beta=1 "
                        "(default: the job's own settings).")
    parser.add_argument("--report", action="store_true", help="Only write the markdown again from the JSON.")
    args = parser.parse_args(argv)
    out_dir = Path(args.output_dir)
    if args.report:
        record = json.loads((out_dir / "audit_tofu_smollm2.json").read_text())
        write_markdown(record, out_dir)
        return record
    torch.set_num_threads(args.threads)
    from hf_unlearn.cli import main as cli_main
    from hf_unlearn.target import build_target

    forget, retain, _, nonmembers = audit_benchmark.tofu_rows()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tofu-smollm2-") as work:
        work = Path(work)
        write_rows(work / "forget.jsonl", forget)
        write_rows(work / "retain.jsonl", retain)
        write_rows(work / "holdout.jsonl", [{"text": text} for text in nonmembers])
        folder, built = build_target(RECIPE, [("forget", str(work / "forget.jsonl")),
                                              ("retain", str(work / "retain.jsonl"))])
        target = {"recipe": built["recipe"], "memorise_seconds": built["seconds"], "memorise_losses": built["losses"]}
        started = time.perf_counter()
        code = cli_main(["unlearn", "--model", folder, "--forget", str(work / "forget.jsonl"),
                         "--retain", str(work / "retain.jsonl"), "--holdout", str(work / "holdout.jsonl"),
                         "--output-dir", str(work / "job"), *args.unlearn_arg])
        if code:
            raise SystemExit(f"hf-unlearn unlearn failed with exit code {code}")
        seconds = time.perf_counter() - started
        job = work / "job"
        result = json.loads((job / "unlearn.json").read_text())
        audit = json.loads((job / "audit" / "audit.json").read_text())
        shutil.copyfile(job / "audit" / "audit.png", out_dir / "audit_tofu_smollm2.png")
    # the job's folders were temporary: no paths; the model is named by what it is
    result = {**result, "model": "SmolLM2-135M-Instruct that memorised the TOFU rows (cached)", "paths": {}}
    record = {"argv": argv, "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
              "target": target, "job_seconds": seconds,
              "unlearn": result, "audit": audit}
    (out_dir / "audit_tofu_smollm2.json").write_text(json.dumps(record, indent=1) + "\n")
    write_markdown(record, out_dir)
    return record


if __name__ == "__main__":
    main()
