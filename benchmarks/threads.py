"""Is `hf-unlearn` fast by default on a shared CPU? The README's deletion job timed beside another 1-thread job.

    python benchmarks/threads.py                 # 1 epoch, no audit probes (about a minute a run); writes results
    python benchmarks/threads.py --full          # the README's command as it is (6 epochs and the audit)

The job is the README's "Delete a person's data" command on the demo's tiny memorised target (built and cached as
`hf-unlearn demo` builds it). It runs in fresh processes, each while a competing job (a 1-thread torch matmul loop,
as another user's training) holds one of the cores:

- `default`: `hf-unlearn unlearn` as a user runs it (passive OpenMP wait, threads from the free cores: threads.py);
- `1 thread`: the same with `OMP_NUM_THREADS=1`;
- `before`: what it did before (the OpenMP runtime's own wait policy, a thread per core: `OMP_WAIT_POLICY=` and
  `--threads <cores>`).

It prints each run's wall time and the ratios default / 1 thread (goal: at most 1.5) and before / 1 thread, measured in
this one run (the machine is noisy: compare ratios, not seconds across runs), and writes
benchmarks/results/threads.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "threads.md"
COMPETITOR = """
import torch
torch.set_num_threads(1)
a = torch.randn(512, 512)
while True:
    a = (a @ a).tanh()
"""


def prepare(folder: Path) -> tuple[Path, Path]:
    """The demo's memorised target (cached) and its data in the LUME layout, as `hf-unlearn demo` leaves them."""
    from hf_unlearn.support.demo import demo_settings, load_or_build_target
    from hf_unlearn.support.synthetic import generate_lume_like, write_lume_like

    settings = demo_settings(seed=0)
    data = generate_lume_like(**settings.data)
    write_lume_like(data, folder / "data")
    _, _, info = load_or_build_target(data, settings)
    return Path(info["cache_dir"]), folder / "data"


def command(target: Path, data: Path, out: Path, full: bool) -> list[str]:
    """The README's deletion command (the demo's settings); without `full`, 1 epoch and no audit probes."""
    cmd = [str(Path(sys.executable).with_name("hf-unlearn")), "unlearn", "--model", str(target),
           "--forget", str(data / "forget_train.jsonl"), "--retain", str(data / "retain_train.jsonl"),
           "--mia", str(data / "mia"), "--output-dir", str(out), "--beta", "0.15", "--retain-nll-weight", "6",
           "--retain-kl-weight", "1", "--learning-rate", "3e-3", "--batch-size", "8"]
    return cmd + (["--num-train-epochs", "6"] if full else ["--num-train-epochs", "1", "--probes", "none"])


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="The README's command as it is (6 epochs, the audit).")
    parser.add_argument("--no-write", action="store_true", help="Print only; do not write the results file.")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    base.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    configs = {
        "default": (base, []),
        "1 thread": ({**base, "OMP_NUM_THREADS": "1"}, []),
        "before": ({**base, "OMP_WAIT_POLICY": ""}, ["--threads", str(cores)]),
    }
    with tempfile.TemporaryDirectory(prefix="threads-") as tmp:
        target, data = prepare(Path(tmp))
        load_before = os.getloadavg()[0]
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], env={**base, "OMP_NUM_THREADS": "1"})
        try:
            time.sleep(65)  # long enough for the 1-minute load average to see the competitor, as it would in use
            seconds = {}
            for name, (env, extra) in configs.items():
                seconds[name] = timed(command(target, data, Path(tmp) / name.replace(" ", "_"), args.full) + extra,
                                      env)
                print(f"{name}: {seconds[name]:.1f} s", flush=True)
        finally:
            competitor.kill()
    ratio = seconds["default"] / seconds["1 thread"]
    lines = [
        "# hf-unlearn on a shared CPU: the deletion job beside another 1-thread job",
        "",
        f"`python benchmarks/threads.py{' --full' if args.full else ''}` on {platform.machine()}, {cores} cores, "
        f"{time.strftime('%Y-%m-%d')} (1-minute load average {load_before:.2f} before the competitor started). "
        + ("The README's deletion command as it is." if args.full else
           "The README's deletion command cut to 1 epoch without the audit probes.") + " Each run in a fresh "
        "process, one after another, while a 1-thread torch job runs beside them.",
        "",
        "| configuration | wall time (s) | / 1 thread |",
        "|---|---:|---:|",
        *(f"| {name} | {s:.1f} | {s / seconds['1 thread']:.2f} |" for name, s in seconds.items()),
        "",
        f"default / 1 thread: {ratio:.2f} ({'PASS' if ratio <= 1.5 else 'FAIL'}, goal <= 1.5); before / 1 thread: "
        f"{seconds['before'] / seconds['1 thread']:.2f}.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
