"""benchmarks/step_cost.py runs the real trainer step and reports what it measured (a tiny model, one step)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from .conftest import REPO_ROOT, SHARED_DATA


@pytest.fixture(scope="module")
def step_cost():
    spec = importlib.util.spec_from_file_location("step_cost", REPO_ROOT / "benchmarks" / "step_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_step_of_the_reference_variants_is_measured(step_cost):
    # Each variant in a fresh process, as the script measures it: a test process's peak RSS is the history of the
    # tests before it, so the memory measured there can be 0.
    args = SimpleNamespace(reps=1, warmup=0, threads=1, data=SHARED_DATA, max_tokens=96)
    results = {v: step_cost.run_child(args, "--variant", v, "--size", "tiny") for v in "abdhijlmn"}
    for v, r in results.items():
        assert r["variant"] == v and r["time_s"] > 0 and r["memory_mb"] > 0
        assert r["answer_tokens"] > 0 and r["vocab"] > 20_000
    # the same rows in every variant on rows (the document variants carry loss on every token)
    assert len({(tuple(r["width"]), r["answer_tokens"]) for v, r in results.items() if v in "abd"}) == 1


def test_ratios_and_verdicts(step_cost):
    def result(memory, time):
        return {"memory_mb": memory, "time_s": time}

    results = {"a": result(100, 1.0), "b": result(105, 1.5), "c": result(101, 1.2), "d": result(150, 1.6),
               "e": result(300, 2.0)}
    rows = {name: (value, verdict) for name, value, verdict in step_cost.ratio_rows(results)}
    assert rows["(b)/(a) memory"] == (pytest.approx(1.05), "PASS (goal <= 1.10)")
    assert rows["(b)/(a) time"] == (pytest.approx(1.5), "FAIL (goal <= 1.40)")
    assert rows["(c)/(a) time"][1].startswith("PASS")
    assert rows["(d)/(b) memory"][0] == pytest.approx(150 / 105)
