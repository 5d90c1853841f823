"""benchmarks/audit.py: its report from the stored audits (the audits themselves take hours)."""

from __future__ import annotations

import importlib.util
import shutil
import sys

from .conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("audit_benchmark", REPO_ROOT / "benchmarks" / "audit.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["audit_benchmark"] = bench
_spec.loader.exec_module(bench)


def test_summary_cells_say_what_comes_back_and_what_the_attack_did_to_the_model():
    assert bench.attack_cell(None) == ""
    assert bench.attack_cell({"recovered": None, "verdict": "int8: ... nothing measurable"}) == "nothing forgotten"
    assert bench.attack_cell({"recovered": -0.1, "verdict": "int8: ... survives"}) == "0% back"
    assert bench.attack_cell({"recovered": 0.13, "verdict": "relearn: ... it damages the model, ..."}) == \
        "13% back; damages the model"
    assert bench.attack_cell({"recovered": 0.0, "verdict": "int4: ... breaks the original model too ..."}) == \
        "0% back; breaks the original too: no test"


def test_the_report_is_written_again_from_the_stored_audits(tmp_path):
    """`--report` judges the stored scores again and writes audit.md: the committed report is what it writes."""
    results = REPO_ROOT / "benchmarks" / "results"
    shutil.copy(results / "audit.json", tmp_path / "audit.json")
    record = bench.main(["--report", "--output-dir", str(tmp_path)])
    assert record["runs"] and all(name.startswith("smollm2/") for name in record["runs"])
    assert (tmp_path / "audit.md").read_text() == (results / "audit.md").read_text()
