"""The `evaluate` metric modules (issue #32): loaded offline from their folders with `evaluate.load`, equal to the
functions the project scores with."""

from __future__ import annotations

import numpy as np
import pytest

from hf_unlearn.evaluate_modules import module_path
from hf_unlearn.metrics.lume import lume_scores_from_generations
from hf_unlearn.metrics.tofu import forget_quality, truth_ratio_score


def test_the_lume_module_equals_the_scoring_function(lume_rows, monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    forget = lume_rows["forget_validation"][:12]
    retain = lume_rows["retain_validation"][:12]
    # generations: the expected output for some rows, a cut or wrong one for others
    gen = lambda rows: [r["output"] if i % 3 == 0 else r["output"][: len(r["output"]) // 2] if i % 3 == 1  # noqa: E731
                        else "no idea" for i, r in enumerate(rows)]
    expected = lume_scores_from_generations(forget, gen(forget), retain, gen(retain))
    lume = evaluate.load(module_path("lume"))
    rows = [("forget", r, g) for r, g in zip(forget, gen(forget))] + [("retain", r, g) for r, g in
                                                                       zip(retain, gen(retain))]
    got = lume.compute(predictions=[g for _, _, g in rows], references=[r["output"] for _, r, _ in rows],
                       ids=[r["id"] for _, r, _ in rows], tasks=[r["task"] for _, r, _ in rows],
                       splits=[s for s, _, _ in rows])
    assert got == expected
    with pytest.raises(ValueError, match="splits must be 'forget' or 'retain'"):
        lume.compute(predictions=["a"], references=["a"], ids=["x1qa0"], tasks=["Task1"], splits=["train"])


def test_the_tofu_forget_quality_module_equals_the_function(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 2, 20).tolist(), rng.uniform(0.5, 2.5, 20).tolist()
    module = evaluate.load(module_path("tofu_forget_quality"))
    got = module.compute(predictions=a, references=b)
    assert got["forget_quality"] == pytest.approx(forget_quality(a, b), abs=1e-12)
    assert got["truth_ratio"] == pytest.approx(truth_ratio_score(a), abs=1e-12)
    with pytest.raises(ValueError, match="unknown metric module"):
        module_path("rouge")
