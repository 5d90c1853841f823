"""Faults and limits: a real SIGKILL and an exact resume, a non-finite loss, a time budget, a failing process in a
2-process run, and no forget-set text in anything written or logged."""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_unlearn import UnlearningTrainer
from hf_unlearn.callbacks import LumeEvaluationCallback
from hf_unlearn.checkpoint import checkpoint_problems, last_complete_checkpoint

from .test_trainer import lora, make_config

SCRIPTS = Path(__file__).parent / "scripts"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "1"}


def run_script(args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, str(SCRIPTS / "train_until_killed.py"), *args], env=ENV, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def assert_resumed_run_equals_uninterrupted(full: Path, killed: Path, optim: str = "adamw") -> None:
    """checkpoint-8 of the resumed run has the weights and optimizer state of the uninterrupted run's, and every step
    it ran after the resume logged the same losses."""
    a = load_file(full / "checkpoint-8" / "adapter_model.safetensors")
    b = load_file(killed / "checkpoint-8" / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)
    opt_a = torch.load(full / "checkpoint-8" / "optimizer.pt", weights_only=True)["state"]
    opt_b = torch.load(killed / "checkpoint-8" / "optimizer.pt", weights_only=True)["state"]
    for index, state in opt_a.items():
        for key, value in state.items():  # Adam moments, or Sophia's momentum and Hessian
            torch.testing.assert_close(opt_b[index][key], value, rtol=0, atol=1e-6)
    if optim == "sophia":
        assert any(state["hessian"].abs().sum() > 0 for state in opt_a.values())
    # The steps after the resume saw the same forget and retain rows: the same logged losses (the log history also
    # holds the steps before the checkpoint, restored from it).
    losses_full = json.loads((full / "losses-full.json").read_text())
    losses_resumed = json.loads((killed / "losses-resume.json").read_text())
    assert set(losses_resumed) == {str(step) for step in range(1, 9)}
    for step in losses_resumed:
        for key in ("loss", "forget_nll", "retain_nll", "retain_kl", "npo_loss"):
            assert losses_resumed[step][key] == pytest.approx(losses_full[step][key], rel=1e-5), (step, key)


def kill_when_ready(victim: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 300
    while not (out / "ready-to-kill").exists():
        assert victim.poll() is None, victim.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL


@pytest.mark.parametrize("optim", ["adamw", "sophia"])
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(optim, saved, tmp_path):
    model, data = str(saved / "model"), str(saved / "data")
    full, killed = tmp_path / "full", tmp_path / "killed"
    uninterrupted = run_script([model, data, str(full), "full", optim], tmp_path)
    victim = run_script([model, data, str(killed), "kill", optim], tmp_path)
    kill_when_ready(victim, killed)
    assert (killed / "checkpoint-4").is_dir() and not (killed / "checkpoint-6").exists()
    resumed = run_script([model, data, str(killed), "resume", optim], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()[-2000:]

    assert_resumed_run_equals_uninterrupted(full, killed, optim)


@pytest.fixture(scope="module")
def uninterrupted(saved, tmp_path_factory):
    """The output folder of one uninterrupted 8-step AdamW run of tests/scripts/train_until_killed.py."""
    full = tmp_path_factory.mktemp("uninterrupted") / "full"
    process = run_script([str(saved / "model"), str(saved / "data"), str(full), "full", "adamw"], full.parent)
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    return full


@pytest.mark.parametrize("point", ["weights", "half-optimizer", "optimizer", "rng", "trainer-state", "before-rename",
                                   "after-rename"])
def test_sigkill_inside_a_save_then_resume_from_the_last_complete_checkpoint_is_exact(point, saved, uninterrupted,
                                                                                      tmp_path):
    model, data, killed = str(saved / "model"), str(saved / "data"), tmp_path / "killed"
    victim = run_script([model, data, str(killed), f"kill-in-save:{point}", "adamw"], tmp_path)
    kill_when_ready(victim, killed)  # inside the save of checkpoint-6
    # A checkpoint-N folder appears only complete: checkpoint-6 exists only once its rename has happened.
    assert (killed / "checkpoint-6").is_dir() == (point == "after-rename")
    assert checkpoint_problems(str(killed / "checkpoint-4")) == []
    if point == "after-rename":
        assert checkpoint_problems(str(killed / "checkpoint-6")) == []
    resumed = run_script([model, data, str(killed), "resume", "adamw"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    if point != "after-rename":
        assert "_tmp-checkpoint-6, left by a save that did not finish" in resumed.stderr.read()
    assert not list(killed.glob("_tmp-*"))
    assert_resumed_run_equals_uninterrupted(uninterrupted, killed)


def trained_with_a_checkpoint_per_step(tiny_model, tokenizer, memorised_rows, tmp_path, steps: int):
    """A gd run of `steps` steps on the memorised rows that saves `checkpoint-1` ... `checkpoint-<steps>`."""
    config = make_config(tmp_path, method="gd", max_steps=steps, save_strategy="steps", save_steps=1,
                         per_device_train_batch_size=2)
    forget, retain = Dataset.from_list(memorised_rows["forget"]), Dataset.from_list(memorised_rows["retain"])
    trainer = UnlearningTrainer(model=lora(tiny_model, nonzero=False), args=config, forget_dataset=forget,
                                retain_dataset=retain, processing_class=tokenizer)
    trainer.train()
    return trainer


def test_resume_skips_incomplete_checkpoints_and_refuses_an_explicit_one(tiny_model, tokenizer, memorised_rows,
                                                                          tmp_path, caplog):
    trainer = trained_with_a_checkpoint_per_step(tiny_model, tokenizer, memorised_rows, tmp_path, 2)
    out = tmp_path / "out"
    (out / "checkpoint-2" / "optimizer.pt").unlink()  # as a partial save or a hand copy leaves it
    (out / "checkpoint-3").mkdir()  # a folder from a save killed before trainer_state.json
    (out / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"\x00" * 7)
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.checkpoint"):
        assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-1")
    assert "checkpoint-3 (no trainer_state.json" in caplog.text and "checkpoint-2 (no optimizer.pt)" in caplog.text
    with pytest.raises(ValueError, match=r"Cannot resume exactly from .*checkpoint-2: no optimizer\.pt"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    trainer.args.resume_inexact = True  # the explicit option: resumes, and says what is not exact
    with pytest.raises(ValueError, match=r"checkpoint-3: no trainer_state\.json"):  # but not from a broken save
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-3"))
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.checkpoint"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert "without an exact state: no optimizer.pt (resume_inexact=True)" in caplog.text


def test_resume_with_other_data_or_settings_is_refused(tiny_model, tokenizer, memorised_rows, tmp_path, caplog):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]

    def trainer_for(forget_rows, retain_rows, **settings):
        config = make_config(tmp_path, **{"method": "gd", "max_steps": 2, "save_strategy": "steps", "save_steps": 2,
                                          "per_device_train_batch_size": 2, **settings})
        return UnlearningTrainer(model=lora(copy.deepcopy(tiny_model), nonzero=False), args=config,
                                 forget_dataset=Dataset.from_list(forget_rows),
                                 retain_dataset=Dataset.from_list(retain_rows), processing_class=tokenizer)

    trainer_for(forget, retain).train()
    fingerprint = (tmp_path / "out" / "checkpoint-2" / "unlearning_fingerprint.json").read_text()
    assert not any(row["output"][:20] in fingerprint for row in forget)
    with pytest.raises(ValueError, match=r"differs from the checkpointed one in the forget set, so it would not"):
        trainer_for(forget[1:], retain).train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match=r"in the retain set, retain_nll_weight \(1\.0 -> 2\.0\), so"):
        trainer_for(forget, retain[::-1], retain_nll_weight=2.0).train(resume_from_checkpoint=True)
    trainer_for(forget, retain, max_steps=3).train(resume_from_checkpoint=True)  # a longer run of the same one
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.checkpoint"):  # the explicit option resumes anyway
        trainer_for(forget[1:], retain, max_steps=4, resume_inexact=True).train(resume_from_checkpoint=True)
    assert "differs from the checkpointed one in the forget set" in caplog.text and "Resuming anyway" in caplog.text


class DivergeAfter(TrainerCallback):
    """Simulates a divergence: a LoRA weight becomes NaN at the start of step `step + 1`, after checkpoint `step`."""

    def __init__(self, model, step: int):
        self.model, self.step = model, step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(p for n, p in self.model.named_parameters() if "lora_B" in n).fill_(float("nan"))


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
    tiny_model, tokenizer, memorised_rows, tmp_path
):
    model = lora(tiny_model, nonzero=False)
    config = make_config(
        tmp_path, method="gd", max_steps=10, save_strategy="steps", save_steps=1, per_device_train_batch_size=2
    )
    trainer = UnlearningTrainer(
        model=model, args=config, forget_dataset=Dataset.from_list(memorised_rows["forget"]),
        retain_dataset=Dataset.from_list(memorised_rows["retain"]), processing_class=tokenizer,
    )
    trainer.add_callback(DivergeAfter(model, step=2))
    message = r"Non-finite loss at step 3 \(forget_nll=nan, retain_nll=nan\)\. Training stopped before this update; " \
        r"the last good checkpoint is .*checkpoint-2\. Lower learning_rate"
    with pytest.raises(FloatingPointError, match=message):
        trainer.train()
    assert not (tmp_path / "out" / "checkpoint-3").exists()
    last = load_file(tmp_path / "out" / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in last.values())


def test_time_budget_stops_saves_and_evaluates_within_it(memorised_model, memorised_rows, tokenizer, tmp_path):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    budget = 25.0
    config = make_config(
        tmp_path, max_steps=100_000, learning_rate=1e-3, save_strategy="steps", save_steps=100_000,
        max_unlearning_time=budget, per_device_train_batch_size=2,
    )
    trainer = UnlearningTrainer(
        model=lora(memorised_model, nonzero=False), args=config, forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain), processing_class=tokenizer,
    )
    trainer.add_callback(
        LumeEvaluationCallback(trainer, forget_rows=forget[:4], retain_rows=retain[:4], every=10_000, unit="step",
                               max_new_tokens=24, batch_size=4)
    )
    started = time.monotonic()
    trainer.train()
    elapsed = time.monotonic() - started
    steps = trainer.state.global_step
    assert 0 < steps < 100_000
    assert (tmp_path / "out" / f"checkpoint-{steps}").is_dir()  # saved where it stopped
    final = [e for e in trainer.state.log_history if "lume/task_score" in e]
    assert final[-1]["step"] == steps  # the final evaluation ran
    assert elapsed < budget + 3.0, elapsed  # set-up before on_train_begin is outside the clock


def test_a_failing_process_makes_a_two_process_run_exit_non_zero_without_hanging(saved, tmp_path):
    script = tmp_path / "fail_on_rank1.py"
    script.write_text(
        "import os, runpy, sys\n"
        "from transformers import TrainerCallback\n"
        "import hf_unlearn.trainer as t\n"
        "class Boom(TrainerCallback):\n"
        "    def on_step_end(self, args, state, control, **kw):\n"
        "        if os.environ.get('RANK') == '1' and state.global_step == 1: raise RuntimeError('rank 1 fails')\n"
        "orig = t.UnlearningTrainer.__init__\n"
        "def init(self, *a, **k):\n"
        "    orig(self, *a, **k); self.add_callback(Boom())\n"
        "t.UnlearningTrainer.__init__ = init\n"
        f"sys.argv = [{str(SCRIPTS / 'train_with_callback.py')!r}] + sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
               str(script), str(saved / "model"), str(saved / "data"), str(tmp_path / "out"), "2"]
    started = time.monotonic()
    result = subprocess.run(command, env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "rank 1 fails" in result.stderr
    assert time.monotonic() - started < 300


CANARIES = ("CANARY-7f3a-ELM-STREET", "canary.ssn.938-22-1177", "canary-row-id-5150")


def test_no_forget_text_or_id_reaches_files_or_logs(memorised_model, memorised_rows, tokenizer, tmp_path, caplog,
                                                     capsys):
    forget = [
        {"id": f"{CANARIES[2]}-{i}sc0", "input": f"{r['input']} {CANARIES[0]}", "output": f"{r['output']} {CANARIES[1]}",
         "task": r["task"]}
        for i, r in enumerate(memorised_rows["forget"][:4])
    ]
    retain = memorised_rows["retain"]
    config = make_config(
        tmp_path, max_steps=4, per_device_train_batch_size=2, save_strategy="steps", save_steps=2, logging_steps=1,
        retain_kl_weight=0.5, report_to=["tensorboard"], max_length=24, hub_token="hf_SECRETTOKEN123",
    )
    with caplog.at_level(logging.DEBUG):
        trainer = UnlearningTrainer(
            model=lora(memorised_model, nonzero=False), args=config, forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain), processing_class=tokenizer,
        )  # max_length=24 truncates rows: the warning names rows, not their text
        trainer.add_callback(LumeEvaluationCallback(trainer, forget_rows=forget, retain_rows=retain[:4], every=2,
                                                    unit="step", max_new_tokens=16))
        trainer.train()
        trainer.save_model(str(tmp_path / "out" / "final"))
    logged = caplog.text + "".join(capsys.readouterr()) + json.dumps(trainer.state.log_history)
    assert "truncated" in caplog.text
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # training_args.bin too: no token in it
    assert any(p.name.startswith("events.out.tfevents") for p in written)
    assert sum(p.name == "training_args.bin" for p in written) >= 3  # two checkpoints and the saved model
    assert trainer.args.hub_token == "hf_SECRETTOKEN123"  # the running trainer keeps it (to push with)
    for canary in CANARIES + ("hf_SECRETTOKEN123",):
        assert canary not in logged, canary
        for path in written:
            assert canary.encode() not in path.read_bytes(), (canary, path)


def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_is_taken(tiny_model, tokenizer, memorised_rows,
                                                                          tmp_path, caplog):
    trainer = trained_with_a_checkpoint_per_step(tiny_model, tokenizer, memorised_rows, tmp_path, 3)
    out = tmp_path / "out"
    adapter = out / "checkpoint-3" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])  # a truncated copy
    data = bytearray((out / "checkpoint-2" / "optimizer.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.checkpoint"):
        assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-1")
    assert "adapter_model.safetensors damaged (checksum)" in caplog.text
    assert "optimizer.pt damaged (checksum)" in caplog.text
    with pytest.raises(ValueError, match=r"checkpoint-3: adapter_model\.safetensors damaged"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-3"))
    # a learning rate changed on resume is refused, not silently ignored
    trainer.args.learning_rate = 1e-2
    with pytest.raises(ValueError, match=r"learning_rate"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-1"))
