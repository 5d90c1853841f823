"""benchmarks/audit.py: the TOFU rows its paraphrase audit is made of (the audits themselves take minutes to hours)."""

from __future__ import annotations

import importlib.util
import sys

from hf_unlearn.audit import paraphrase_rows, split_documents
from hf_unlearn.metrics.lume import SENTENCE_COMPLETION, row_kind

from .conftest import REPO_ROOT, SHARED_DATA

_spec = importlib.util.spec_from_file_location("audit_benchmark", REPO_ROOT / "benchmarks" / "audit.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["audit_benchmark"] = bench
_spec.loader.exec_module(bench)


def test_tofu_rows_are_forget01_with_paraphrases_two_retain_authors_and_holdout_nonmembers():
    forget, retain, members, nonmembers = bench.tofu_rows(SHARED_DATA / "tofu")
    assert len(forget) == 40 and len(retain) == 40 and len(members) == 40 and len(nonmembers) == 40
    # forget01 is the last two of TOFU's 200 authors; retain the first two: whole authors, no question in both
    assert {r["document"] for r in forget} == {"author198", "author199"}
    assert {r["document"] for r in retain} == {"author000", "author001"}
    assert not {r["input"] for r in forget} & {r["input"] for r in retain}
    # answers are scored by ROUGE-L recall, and every forget question has its paraphrase
    assert all(row_kind(r["id"]) == SENTENCE_COMPLETION for r in forget + retain)
    asked = paraphrase_rows(forget)
    assert len(asked) == 40 and all(p["input"] != r["input"] and p["output"] == r["output"]
                                    for p, r in zip(asked, forget))
    # the relearning attack holds out one whole author
    seen, unseen = split_documents(forget, 0.5)
    assert len(seen) == len(unseen) == 20 and not {r["document"] for r in seen} & {r["document"] for r in unseen}
    assert not set(members) & set(nonmembers)


def test_summary_cells_say_what_comes_back_and_what_the_attack_did_to_the_model():
    assert bench.attack_cell(None) == ""
    assert bench.attack_cell({"recovered": None, "verdict": "int8: ... nothing measurable"}) == "nothing forgotten"
    assert bench.attack_cell({"recovered": -0.1, "verdict": "int8: ... survives"}) == "0% back"
    assert bench.attack_cell({"recovered": 0.13, "verdict": "relearn: ... it damages the model, ..."}) == \
        "13% back; damages the model"
    assert bench.attack_cell({"recovered": 0.0, "verdict": "int4: ... breaks the original model too ..."}) == \
        "0% back; breaks the original too: no test"
