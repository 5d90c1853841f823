"""`hf-unlearn unlearn`: the document splitter on its own, then the whole job end to end on a tiny model that
memorised real LUME rows, from LUME-style rows and from plain documents, with its outputs, card and canary scan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hf_unlearn.cli import main as cli_main
from hf_unlearn.data import DataValidationError
from hf_unlearn.data.documents import documents_to_rows, load_rows, passage_spans, sentence_spans
from hf_unlearn.metrics.lume import row_kind

from .conftest import short_rows

TEXT = ("Jane Roe was born on 3 May 1980 in Leeds. Her phone number is 0113 496 0000. She works as a nurse at St. "
        "James's Hospital with Dr. J. Smith.\nShe lives at 12 Park Road. \"Call me,\" she said! Yes.")


def test_sentences_end_at_stops_and_line_breaks_but_not_after_abbreviations_or_initials():
    sentences = [TEXT[s:e] for s, e in sentence_spans(TEXT)]
    assert sentences == ["Jane Roe was born on 3 May 1980 in Leeds.", "Her phone number is 0113 496 0000.",
                         "She works as a nurse at St. James's Hospital with Dr. J. Smith.", "She lives at 12 Park Road.",
                         '"Call me," she said!', "Yes."]


def test_passages_pack_whole_sentences_cut_long_ones_and_join_a_one_word_tail():
    spans = passage_spans(TEXT, max_words=12)
    words = [len(TEXT[s:e].split()) for s, e, _ in spans]
    assert all(n <= 12 for n in words[:-1]) and words[-1] <= 13  # the last absorbed the one-word "Yes."
    assert TEXT[spans[-1][0]:spans[-1][1]].endswith("Yes.")
    long = "w " * 250
    assert [len(long[s:e].split()) for s, e, _ in passage_spans(long, 100)] == [100, 100, 50]


def test_rows_slice_the_text_cut_near_the_prompt_fraction_and_are_scored_as_completions():
    rows = documents_to_rows([TEXT, "Two words"], ids=["jane", "short"], max_words=100, prompt_fraction=0.5)
    assert [r["document"] for r in rows] == ["jane", "short"]
    jane = rows[0]
    assert TEXT.startswith(jane["input"]) and TEXT.endswith(jane["output"])
    assert re.sub(r"\s+", " ", jane["input"] + " " + jane["output"]) == re.sub(r"\s+", " ", TEXT)
    assert jane["input"].endswith("0000.")  # the sentence boundary nearest to half of the 36 words
    assert rows[1]["input"] == "Two" and rows[1]["output"] == "words"  # one sentence: cut at the word
    assert all(row_kind(r["id"]) == "sc" for r in rows) and {r["task"] for r in rows} == {"documents"}
    many = documents_to_rows(["x y " * 600], max_words=50)
    assert len(many) == 24 and all(row_kind(r["id"]) == "sc" for r in many)  # ids past 9 passages still parse


def test_documents_that_cannot_be_split_are_refused_by_number_never_by_text():
    with pytest.raises(DataValidationError, match="document 2: fewer than 2 words") as err:
        documents_to_rows(["A fine document.", "ZQXJsecret"], source="forget file f.txt")
    assert "ZQXJ" not in str(err.value)
    with pytest.raises(DataValidationError, match="same id"):
        documents_to_rows(["a b", "c d"], ids=["x", "x"])


def test_load_rows_reads_text_files_text_jsonl_and_lume_rows(tmp_path):
    (tmp_path / "f.txt").write_text(TEXT + "\n\n  \nSecond person, Max Mustermann, lives in Berlin.\n")
    rows, docs = load_rows(tmp_path / "f.txt", "forget")
    assert len(docs) == 2 and {r["document"] for r in rows} == {"f0", "f1"}
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "p1", "text": TEXT}) + "\n")
    rows, docs = load_rows(tmp_path / "d.jsonl", "forget")
    assert docs == [TEXT] and rows[0]["id"].startswith("p1-")
    (tmp_path / "r.jsonl").write_text(json.dumps({"input": "Q?", "output": "A."}) + "\n"
                                      + json.dumps({"id": "x1qa0", "input": "Q2?", "output": "B.", "task": "T"}) + "\n")
    rows, docs = load_rows(tmp_path / "r.jsonl", "retain")
    assert [r["id"] for r in rows] == ["r-1sc0", "x1qa0"] and rows[0]["task"] == "rows" and docs == ["Q? A."]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "ZQXJ one two"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataValidationError, match=r"line 2: expected LUME-style rows .* fields \['body'\]"):
        load_rows(tmp_path / "bad.jsonl", "forget")
    (tmp_path / "mia.jsonl").write_text(json.dumps({"document": "An unseen text of a few words."}) + "\n")
    assert load_rows(tmp_path / "mia.jsonl", "holdout")[1] == ["An unseen text of a few words."]  # LUME's MIA files
    (tmp_path / "num.jsonl").write_text(json.dumps({"text": 5}) + "\n")
    with pytest.raises(DataValidationError, match="line 1: field 'text' must be a non-empty string, got int"):
        load_rows(tmp_path / "num.jsonl", "forget")
    (tmp_path / "dup.jsonl").write_text("".join(json.dumps({"id": "k7sc1", "input": "Q", "output": o}) + "\n"
                                                for o in ("ZQXJ secret.", "B.", "ZQXJ secret again.")))
    with pytest.raises(DataValidationError, match=r"dup.jsonl, line 2: field 'id' repeats the id of line 1") as err:
        load_rows(tmp_path / "dup.jsonl", "forget")
    assert "ZQXJ" not in str(err.value)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _canary_scan(folder, texts):
    """No forget answer appears in any text file the job wrote (weights are binary and skipped)."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".jsonl", ".yaml", ".jinja", ""):
            content = path.read_text(errors="ignore")
            for text in texts:
                assert text not in content, f"forget text in {path}"


@pytest.fixture
def saved_target(memorised_model, tokenizer, tmp_path):
    folder = tmp_path / "target"
    memorised_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_unlearn_command_on_lume_rows_end_to_end(saved_target, memorised_rows, lume_dir, tmp_path, capsys):
    from .conftest import read_jsonl

    forget = _write_jsonl(tmp_path / "forget.jsonl", memorised_rows["forget"])
    retain = _write_jsonl(tmp_path / "retain.jsonl", memorised_rows["retain"])
    holdout = _write_jsonl(tmp_path / "holdout.jsonl",
                           [{"text": r["document"]} for r in read_jsonl(lume_dir / "mia" / "nonmember.jsonl")[:8]])
    out = tmp_path / "out"
    code = cli_main(["unlearn", "--model", str(saved_target), "--forget", str(forget), "--retain", str(retain),
                     "--holdout", str(holdout), "--output-dir", str(out), "--learning-rate", "1e-2",
                     "--method", "npo", "--unseen-band", "0",
                     "--num-train-epochs", "4", "--probes", "int8,relearn,prefix50", "--max-new-tokens", "48",
                     "--trainer-arg", "logging_steps=4", "--relearn-learning-rate", "1e-3", "--relearn-steps", "6"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "unlearn.json").read_text())
    assert set(result) >= {"format", "version", "model", "method", "method_settings", "training", "rows", "scores",
                           "audit", "caveats", "paths", "mia"}
    before, after = result["scores"]["before"], result["scores"]["after"]
    assert before["forget/regurgitation"] > 0.8  # the target memorised them
    assert after["forget/regurgitation"] < before["forget/regurgitation"] - 0.2  # and the job made it forget
    assert {"mia/auc", "retain/regurgitation", "forget/knowledge"} <= set(after)
    assert set(result["audit"]["probes"]) == {"int8", "relearn", "prefix50"}
    assert (result["audit"]["settings"]["relearn"]["learning_rate"], result["audit"]["settings"]["relearn"]["steps"]) \
        == (1e-3, 6)  # the attacker the options asked for
    completions = sum(row_kind(r["id"]) == "sc" for r in memorised_rows["forget"])
    # one document per completion row; the holdout's seeded evaluation half is the attack's (the other half calibrates)
    assert result["mia"] == {"members": completions, "nonmembers": 4,
                             "nonmembers_from": "--holdout, evaluation half (seeded split)"}
    assert result["calibration"]["documents"] == 4 and result["stopping"] is None
    assert {"mia/zlib_auc", "mia/min_k_auc", "mia/min_k_plus_plus_auc", "mia/exposed_share"} <= set(after)
    # the report: before -> after, verdicts, caveats, files
    assert "forget regurgitation" in printed and "int8:" in printed and "Files" in printed
    assert (out / "report.md").read_text().strip() in printed
    # the adapter names its base; the merged model has a card with method, settings, scores and the audit
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(saved_target.resolve())
    card = (out / "merged" / "README.md").read_text()
    assert "Method: `npo`" in card and "retain_kl_weight" in card and "forget/regurgitation" in card
    assert "## Audit" in card and "int8:" in card
    assert (out / "merged" / "model.safetensors").is_file() and (out / "audit" / "audit.json").is_file()
    # int8 keeps the unlearned model's retain rows, so the quantization control (the original rounded the same way)
    # is not needed and not run; the audit says what each stage cost
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert "original_attacked" not in audit["probes"]["int8"]
    assert audit["probes"]["int8"]["attacked"]["retain/exact_memorization"] == pytest.approx(
        after["retain/exact_memorization"], abs=0.2)
    assert {"original", "unlearned", "int8"} <= set(audit["seconds"])
    _canary_scan(out, [r["output"] for r in memorised_rows["forget"] if len(r["output"]) > 12])
    # a second run may write into the folder it made, a foreign folder is refused before anything loads
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli_main(["unlearn", "--model", str(saved_target), "--forget", str(forget), "--retain", str(retain),
                     "--output-dir", str(foreign)]) == 2
    assert "was not made by `hf-unlearn unlearn`" in capsys.readouterr().err


def test_unlearn_command_on_plain_documents(saved_target, memorised_rows, tmp_path, capsys):
    # The documents the target memorised, as a user would have them: one paragraph each, no input/output split.
    docs = [r["input"] + " " + r["output"] for r in memorised_rows["forget"]]
    (tmp_path / "forget.txt").write_text("\n\n".join(docs) + "\n")
    retain = _write_jsonl(tmp_path / "retain.jsonl",
                          [{"id": f"r{i}", "text": r["input"] + " " + r["output"]}
                           for i, r in enumerate(memorised_rows["retain"])])
    out = tmp_path / "out"
    assert cli_main(["unlearn", "--model", str(saved_target), "--forget", str(tmp_path / "forget.txt"),
                     "--retain", str(retain), "--output-dir", str(out), "--learning-rate", "1e-2",
                     "--num-train-epochs", "4", "--probes", "none", "--max-new-tokens", "48"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "unlearn.json").read_text())
    assert result["rows"]["forget_documents"] == len(docs) and result["audit"] is None and result["mia"] is None
    before, after = result["scores"]["before"], result["scores"]["after"]
    assert after["forget/regurgitation"] < before["forget/regurgitation"] - 0.2
    assert "forget/knowledge" not in after  # no question rows in plain documents
    assert "No membership-inference attack was run" in printed and "No question rows" in printed
    assert "Method: `npo`" in (out / "merged" / "README.md").read_text()
    _canary_scan(out, [d[len(d) // 2:][:40] for d in docs])


def test_unlearn_refuses_bad_input_before_loading_a_model(tmp_path, capsys):
    (tmp_path / "f.jsonl").write_text(json.dumps({"input": "a", "output": 3}) + "\n")
    (tmp_path / "r.txt").write_text("Some retained text here.\n")
    args = ["unlearn", "--model", str(tmp_path / "no-such-model"), "--retain", str(tmp_path / "r.txt"),
            "--output-dir", str(tmp_path / "out")]
    assert cli_main(args + ["--forget", str(tmp_path / "f.jsonl")]) == 2
    assert "line 1: field 'output' must be a string, got int" in capsys.readouterr().err
    (tmp_path / "f.txt").write_text("A forget document of a few words.\n")
    assert cli_main(args + ["--forget", str(tmp_path / "f.txt"), "--method", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(args + ["--forget", str(tmp_path / "f.txt"), "--trainer-arg", "no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert cli_main(args + ["--forget", str(tmp_path / "f.txt"), "--relearn-steps", "0"]) == 2
    assert "--relearn-steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out" / "adapter").exists()


def test_unlearn_options_are_the_dataclass_fields_through_hf_argument_parser(capsys):
    import dataclasses

    from hf_unlearn.cli import build_parser
    from hf_unlearn.unlearn import UnlearnArguments

    base = ["unlearn", "--model", "m", "--forget", "f", "--retain", "r", "--output-dir", "o"]
    args = build_parser().parse_args(base + ["--trainer-arg", "a=1", "--trainer_arg", "b=2", "c=3",
                                             "--trust-remote-code", "--learning-rate", "1e-4"])
    job = UnlearnArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(UnlearnArguments)})
    assert job.trainer_arg == ["a=1", "b=2", "c=3"] and job.trust_remote_code is True and job.learning_rate == 1e-4
    defaults = build_parser().parse_args(base)
    assert defaults.trainer_arg == [] and defaults.trust_remote_code is False and defaults.retain_kl_weight == 3.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["unlearn", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(UnlearnArguments):  # every field is an option, with its help and default
        assert f"--{f.name.replace('_', '-')}" in text or f"--{f.name}" in text, f.name
    assert "Weight of the retain KL(model || reference) term. (default: 3.0)" in " ".join(text.split())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["unlearn", "--model", "m"])  # the required fields are required


def test_unlearn_with_holdout_runs_the_anchored_method_and_reports_on_other_documents(
        saved_target, memorised_rows, lume_rows, tmp_path, capsys):
    from hf_unlearn.data.holdout import split_holdout

    # The forget rows as the documents a user holds; unseen documents of the same kind (other Task2 rows).
    docs = [r["input"] + " " + r["output"] for r in memorised_rows["forget"]]
    (tmp_path / "forget.txt").write_text("\n\n".join(docs) + "\n")
    retain = _write_jsonl(tmp_path / "retain.jsonl", memorised_rows["retain"])
    unseen = [r["input"] + " " + r["output"] for r in short_rows(lume_rows["forget_train"], n=20)[8:]]
    holdout = _write_jsonl(tmp_path / "holdout.jsonl", [{"text": t} for t in unseen])
    out = tmp_path / "out"
    assert cli_main(["unlearn", "--model", str(saved_target), "--forget", str(tmp_path / "forget.txt"),
                     "--retain", str(retain), "--holdout", str(holdout), "--output-dir", str(out),
                     "--learning-rate", "3e-3", "--num-train-epochs", "20", "--probes", "none",
                     "--retain-nll-weight", "1", "--retain-kl-weight", "1", "--max-new-tokens", "48",
                     # the tiny model's forget and retain documents are biographies of one template: they go together
                     "--max-retain-rise", "8", "--stop-check-steps", "2", "--unseen-band", "0.15"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "unlearn.json").read_text())
    assert result["method"] == "anchored"  # --holdout without --method: the forget documents go to the unseen level
    calibration, evaluation = split_holdout(unseen, seed=0)
    assert result["calibration"] == {"documents": len(calibration), "from": "--holdout, calibration half (seeded split)"}
    assert result["mia"]["nonmembers"] == len(evaluation) == 6
    before, after = result["scores"]["before"], result["scores"]["after"]
    assert before["mia/auc"] > 0.9 and abs(after["mia/auc"] - 0.5) < abs(before["mia/auc"] - 0.5)  # the MIA moved
    assert result["stopping"]["checks"] and result["stopping"]["best"]["step"] <= result["training"]["steps"]
    assert f"membership attacks: {len(docs)} forget documents against 6 unseen documents" in printed
    assert "stopping rule:" in printed and "calibration documents" in printed
    _canary_scan(out, [d[len(d) // 2:][:40] for d in docs])


def test_unseen_documents_are_checked_before_a_model_loads(memorised_rows, lume_rows, tmp_path, capsys):
    docs = [r["input"] + " " + r["output"] for r in memorised_rows["forget"]]
    (tmp_path / "forget.txt").write_text("\n\n".join(docs) + "\n")
    (tmp_path / "r.txt").write_text("Some retained text here.\n")
    unseen = [r["input"] + " " + r["output"] for r in short_rows(lume_rows["forget_train"], n=20)[8:]]
    base = ["unlearn", "--model", str(tmp_path / "no-such-model"), "--forget", str(tmp_path / "forget.txt"),
            "--retain", str(tmp_path / "r.txt"), "--output-dir", str(tmp_path / "out")]

    def run(extra):
        code = cli_main(base + extra)
        return code, capsys.readouterr().err

    # a forget document among the unseen ones, white space aside: refused by number
    (tmp_path / "h.txt").write_text("\n\n".join(unseen[:7] + ["  " + docs[2].replace(" ", "\n ", 1)]) + "\n")
    code, err = run(["--holdout", str(tmp_path / "h.txt")])
    assert code == 2 and "--holdout: document 8 is also a forget document" in err
    # too few to split into calibration and evaluation halves
    (tmp_path / "few.txt").write_text("\n\n".join(unseen[:5]) + "\n")
    code, err = run(["--holdout", str(tmp_path / "few.txt")])
    assert code == 2 and "5 document(s); split into calibration and evaluation halves it needs at least 8" in err
    # the calibration file and the holdout share a document
    (tmp_path / "c.txt").write_text("\n\n".join(unseen[4:9]) + "\n")
    (tmp_path / "e.txt").write_text("\n\n".join(unseen[:5]) + "\n")
    code, err = run(["--holdout", str(tmp_path / "e.txt"), "--calibration", str(tmp_path / "c.txt")])
    assert code == 2 and "--holdout: document 5 is also a --calibration document" in err
    # the anchored method without any unseen documents
    code, err = run(["--method", "anchored"])
    assert code == 2 and "give --holdout" in err
    for message in (err,):
        assert not any(d[:30] in message for d in docs + unseen)  # no text quoted
    assert not (tmp_path / "out").exists()


def test_split_holdout_is_seeded_disjoint_and_in_file_order():
    from hf_unlearn.data.holdout import split_holdout

    docs = [f"document number {i} of the holdout" for i in range(11)]
    calibration, evaluation = split_holdout(docs, seed=3)
    assert len(calibration) == 5 and len(evaluation) == 6 and not set(calibration) & set(evaluation)
    assert sorted(calibration + evaluation, key=docs.index) == docs
    assert calibration == sorted(calibration, key=docs.index)  # file order kept within each half
    assert split_holdout(docs, seed=3) == (calibration, evaluation) and split_holdout(docs, seed=4) != (calibration,
                                                                                                      evaluation)


def test_calibration_documents_carry_the_task_their_file_names(lume_rows, tmp_path):
    from argparse import Namespace

    from hf_unlearn.data.documents import document_kinds, rows_to_units
    from hf_unlearn.unlearn import with_kinds

    rows = [r for r in lume_rows["forget_train"] if r["id"][:-1].endswith("sc")][:6]
    docs = [r["input"] + " " + r["output"] for r in rows]
    tagged = tmp_path / "calibration.jsonl"
    tagged.write_text("".join(json.dumps({"document": d, "task": r["task"]}) + "\n" for d, r in zip(docs, rows)))
    kinds = document_kinds(tagged)
    assert kinds == {d: f"{r['task']}/document" for d, r in zip(docs, rows)}
    # the names rows_to_units gives the forget documents of those tasks, so the anchored method matches them
    assert set(kinds.values()) <= {group for _, group in rows_to_units(rows)}
    with_groups = with_kinds(docs[2:], Namespace(calibration=str(tagged), holdout=None))
    assert [c["text"] for c in with_groups] == docs[2:] and [c["group"] for c in with_groups] == [
        f"{r['task']}/document" for r in rows[2:]]
    assert with_kinds(docs[:3], Namespace(calibration=None, holdout=str(tagged)))[0]["group"] == kinds[docs[0]]
    # a row without a task, or plain text: the documents as given
    untagged = tmp_path / "some.jsonl"
    untagged.write_text(json.dumps({"document": docs[0], "task": rows[0]["task"]}) + "\n"
                        + json.dumps({"document": docs[1]}) + "\n")
    (tmp_path / "c.txt").write_text("\n\n".join(docs) + "\n")
    assert document_kinds(untagged) is None and document_kinds(tmp_path / "c.txt") is None
    assert with_kinds(docs, Namespace(calibration=str(tmp_path / "c.txt"), holdout=None)) == docs
    assert with_kinds(None, Namespace(calibration=None, holdout=None)) is None


def _result(before: dict, after: dict, audit: bool = True) -> dict:
    return {"scores": {"before": before, "after": after}, "audit": {"probes": {}} if audit else None}


def test_overall_verdict_on_a_model_that_never_learned_the_text():
    from hf_unlearn.unlearn import caveats, overall_verdict

    result = _result({"forget/regurgitation": 0.086, "retain/regurgitation": 0.09, "mia/auc": 0.52},
                     {"forget/regurgitation": 0.086, "retain/regurgitation": 0.09, "mia/auc": 0.52})
    verdict = overall_verdict(result)
    assert verdict["forgotten"] == "nothing to forget" and verdict["evidence"] == "weak"
    notes = " ".join(caveats({**result, "eval_rows": None}))
    assert "little to forget" in notes and "retain rows too" in notes
    assert "more epochs" not in notes  # the cause is that there was nothing to forget, not the training


def test_overall_verdict_when_everything_was_forgotten_and_kept():
    from hf_unlearn.unlearn import overall_verdict

    before = {"forget/regurgitation": 0.95, "forget/knowledge": 1.0, "retain/regurgitation": 0.9,
              "retain/knowledge": 1.0, "mia/auc": 1.0}
    after = {"forget/regurgitation": 0.2, "forget/knowledge": 0.0, "retain/regurgitation": 0.88,
             "retain/knowledge": 0.95, "mia/auc": 0.53}
    verdict = overall_verdict(_result(before, after))
    assert (verdict["forgotten"], verdict["kept"], verdict["evidence"]) == ("yes", "yes", "strong")
    assert verdict["line"].startswith("Verdict: forgotten; the rest kept; evidence strong") and "look unseen" in \
        verdict["line"]
    # the same scores with the attack still telling the documents apart, or without the audit: weak evidence
    assert overall_verdict(_result(before, {**after, "mia/auc": 0.97}))["evidence"] == "weak"
    assert overall_verdict(_result(before, after, audit=False))["evidence"] == "weak"
    assert overall_verdict(_result(before, {k: v for k, v in after.items() if k != "mia/auc"},
                                   audit=False))["evidence"] == "missing"


def test_overall_verdict_on_a_broken_model():
    from hf_unlearn.unlearn import overall_verdict

    verdict = overall_verdict(_result({"forget/regurgitation": 0.9, "retain/regurgitation": 0.9, "mia/auc": 1.0},
                                      {"forget/regurgitation": 0.0, "retain/regurgitation": 0.05, "mia/auc": 0.2}))
    assert (verdict["forgotten"], verdict["kept"], verdict["evidence"]) == ("yes", "broken", "weak")
    assert "the model broken" in verdict["line"] and "still stand out" in verdict["line"]
    partly = overall_verdict(_result({"forget/regurgitation": 0.9, "retain/regurgitation": 0.9},
                                     {"forget/regurgitation": 0.7, "retain/regurgitation": 0.75}, audit=False))
    assert (partly["forgotten"], partly["kept"], partly["evidence"]) == ("partly", "no", "missing")


def test_settings_that_do_nothing_are_refused_before_a_model_loads(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("A forget document of a few words.\n")
    (tmp_path / "r.txt").write_text("Some retained text here.\n")
    base = ["unlearn", "--model", str(tmp_path / "no-such-model"), "--forget", str(tmp_path / "f.txt"),
            "--retain", str(tmp_path / "r.txt"), "--output-dir", str(tmp_path / "out")]
    for option, value in (("--num-train-epochs", "0"), ("--num-train-epochs", "-1"), ("--learning-rate", "0"),
                          ("--lora-alpha", "0"), ("--max-new-tokens", "-5"), ("--max-new-tokens", "0"),
                          ("--retain-patience", "0")):
        assert cli_main(base + [option, value]) == 2
        assert option in capsys.readouterr().err, option
    assert not (tmp_path / "out").exists()


def test_a_second_job_into_the_same_folder_is_refused_while_the_first_holds_it(tmp_path):
    from hf_unlearn.unlearn import check_output_dir, lock_output_dir

    out = tmp_path / "out"
    first = lock_output_dir(out)
    try:
        with pytest.raises(FileExistsError, match="being written by another"):
            lock_output_dir(out)
    finally:
        first.close()
    check_output_dir(out)  # a folder holding only the lock of a job that ended is still ours to write
    lock_output_dir(out).close()  # and free again


def test_eval_forget_alone_is_scored_without_a_retain_side(saved_target, memorised_rows, tmp_path):
    forget = _write_jsonl(tmp_path / "forget.jsonl", memorised_rows["forget"][:4])
    retain = _write_jsonl(tmp_path / "retain.jsonl", memorised_rows["retain"][:4])
    extra = _write_jsonl(tmp_path / "extra.jsonl", memorised_rows["forget"][4:])
    out = tmp_path / "out"
    assert cli_main(["unlearn", "--model", str(saved_target), "--forget", str(forget), "--retain", str(retain),
                     "--eval-forget", str(extra), "--output-dir", str(out), "--num-train-epochs", "1",
                     "--probes", "none", "--max-new-tokens", "8"]) == 0
    after = json.loads((out / "unlearn.json").read_text())["scores"]["after"]
    assert "eval/forget/regurgitation" in after and not any(k.startswith("eval/retain") for k in after)
    assert (out / "merged" / "model.safetensors").is_file() and (out / "report.md").is_file()


def test_the_pre_finetuning_model_is_checked_before_a_model_loads(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("A forget document of a few words.\n")
    (tmp_path / "r.txt").write_text("Some retained text here.\n")
    base = ["unlearn", "--model", str(tmp_path / "no-such-model"), "--forget", str(tmp_path / "f.txt"),
            "--retain", str(tmp_path / "r.txt"), "--output-dir", str(tmp_path / "out")]
    assert cli_main(base + ["--method", "pre_finetuning_distill"]) == 2
    assert "give --pre-finetuning-model" in capsys.readouterr().err
    assert cli_main(base + ["--pre-finetuning-model", str(tmp_path), "--method", "npo"]) == 2  # npo does not read it
    assert "--pre-finetuning-model is read by method pre_finetuning_distill only" in capsys.readouterr().err
    assert cli_main(base + ["--method", "pre_finetuning_distill", "--pre-finetuning-model", "./gone"]) == 2
    assert "--pre-finetuning-model folder not found: ./gone" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # an offline model name is taken as --model takes it (a comparison's pre_finetuning_model: smollm2)
    from types import SimpleNamespace

    from hf_unlearn.unlearn import check_pre_finetuning_model

    needs = SimpleNamespace(forget_pre_logits=True)
    config = SimpleNamespace(method="pre_finetuning_distill", unlearning_method=SimpleNamespace(needs=lambda: needs))
    check_pre_finetuning_model(SimpleNamespace(pre_finetuning_model="smollm2", model="smollm2"), config)


def test_unlearn_distils_toward_the_pre_finetuning_model(saved_target, memorised_rows, tokenizer, tmp_path):
    from hf_unlearn.support.tiny import tiny_causal_lm

    pre = tmp_path / "pre"  # the model before memorisation: the target's architecture, never trained
    tiny_causal_lm(tokenizer, arch="olmo", seed=0).save_pretrained(pre)
    docs = [r["input"] + " " + r["output"] for r in memorised_rows["forget"]]
    (tmp_path / "forget.txt").write_text("\n\n".join(docs) + "\n")
    retain = _write_jsonl(tmp_path / "retain.jsonl", memorised_rows["retain"])
    out = tmp_path / "out"
    assert cli_main(["unlearn", "--model", str(saved_target), "--forget", str(tmp_path / "forget.txt"),
                     "--retain", str(retain), "--output-dir", str(out), "--learning-rate", "1e-2",
                     "--pre-finetuning-model", str(pre),  # the method it implies
                     "--num-train-epochs", "4", "--probes", "none", "--max-new-tokens", "48"]) == 0
    result = json.loads((out / "unlearn.json").read_text())
    before, after = result["scores"]["before"], result["scores"]["after"]
    assert result["pre_finetuning_model"] == str(pre) and result["method"] == "pre_finetuning_distill"
    assert after["forget/regurgitation"] < before["forget/regurgitation"] - 0.2
    assert result["method_settings"]["distill_weight"] == 1.0


def test_outputs_are_a_transaction_a_failure_after_training_keeps_the_earlier_result_and_the_adapter(
        saved_target, memorised_rows, tmp_path, monkeypatch, capsys):
    import hashlib

    import hf_unlearn.audit as audit_package

    docs = [r["input"] + " " + r["output"] for r in memorised_rows["forget"]]
    (tmp_path / "forget.txt").write_text("\n\n".join(docs) + "\n")
    retain = _write_jsonl(tmp_path / "retain.jsonl", memorised_rows["retain"])
    out = tmp_path / "out"
    args = ["unlearn", "--model", str(saved_target), "--forget", str(tmp_path / "forget.txt"), "--retain", str(retain),
            "--output-dir", str(out), "--num-train-epochs", "1", "--max-new-tokens", "8"]
    assert cli_main(args + ["--probes", "int8"]) == 0
    capsys.readouterr()
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    first = {p.relative_to(out): digest(p) for p in out.rglob("*") if p.is_file() and p.name != ".hf-unlearn.lock"}
    assert (out / "audit" / "audit.json").is_file()

    def full_disk(*args, **kwargs):  # a failure after training, as a full disk would raise it in the audit
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_package, "audit_model", full_disk)
    assert cli_main(args + ["--probes", "none", "--learning-rate", "5e-3"]) == 2
    err = capsys.readouterr().err
    assert "training finished, but the job failed after it" in err and "No space left on device" in err
    assert f"hf-unlearn merge --adapter {out / 'adapter-unfinished'}" in err
    # the earlier complete result is untouched, the new adapter kept beside it, nothing half written left
    assert {p.relative_to(out): digest(p) for p in out.rglob("*") if p.is_file() and p.name != ".hf-unlearn.lock"
            and "adapter-unfinished" not in p.parts} == first
    assert (out / "adapter-unfinished" / "adapter_config.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]
    monkeypatch.undo()
    # the next run into the folder replaces the result whole: no audit from the earlier run beside a report without
    assert cli_main(args + ["--probes", "none"]) == 0
    assert not (out / "audit").exists() and not (out / "adapter-unfinished").exists()
    result = json.loads((out / "unlearn.json").read_text())
    assert result["audit"] is None and Path(result["paths"]["merged model"]) == out / "merged"
    assert (out / "merged" / "model.safetensors").is_file() and (out / "adapter" / "adapter_config.json").is_file()


def test_an_output_folder_that_cannot_be_written_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("A forget document of a few words.\n")
    (tmp_path / "r.txt").write_text("Some retained text here.\n")
    (tmp_path / "a-file").write_text("")
    assert cli_main(["unlearn", "--model", "smollm2", "--forget", str(tmp_path / "f.txt"), "--retain",
                     str(tmp_path / "r.txt"), "--output-dir", str(tmp_path / "a-file" / "out")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write to --output-dir {tmp_path / 'a-file' / 'out'}" in err and len(err.strip().splitlines()) == 1


def test_bin_weights_are_refused_in_one_line_by_every_command(saved_target, lume_dir, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "bin-model"  # the same model, saved the old way: pickled weights only
    shutil.copytree(saved_target, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    (tmp_path / "f.txt").write_text("A forget document of a few words.\n")
    (tmp_path / "r.txt").write_text("Some retained text here.\n")
    unlearn = ["unlearn", "--model", str(folder), "--forget", str(tmp_path / "f.txt"), "--retain",
               str(tmp_path / "r.txt"), "--output-dir", str(tmp_path / "out"), "--probes", "none"]
    assert cli_main(unlearn) == 2
    assert f"--model folder {folder} has .bin weights only" in capsys.readouterr().err
    assert cli_main(["evaluate", "--model", str(folder), "--data", str(lume_dir), "--output-dir",
                     str(tmp_path / "ev")]) == 2
    assert f"model folder {folder} has .bin weights only" in capsys.readouterr().err


def test_general_ability_lost_makes_the_rest_not_kept():
    from hf_unlearn.unlearn import caveats, format_report, overall_verdict

    before = {"forget/regurgitation": 0.95, "retain/regurgitation": 0.9, "mia/auc": 1.0, "general/ppl": 20.0,
              "general/knowledge": 0.30}
    after = {"forget/regurgitation": 0.2, "retain/regurgitation": 0.88, "mia/auc": 0.53, "general/ppl": 21.0,
             "general/knowledge": 0.28}
    assert overall_verdict(_result(before, after))["kept"] == "yes"  # within 0.05 and 20%
    worse = {**after, "general/knowledge": 0.20}
    assert overall_verdict(_result(before, worse))["kept"] == "no"
    assert "General knowledge fell by 0.10" in " ".join(caveats({**_result(before, worse), "eval_rows": None}))
    assert overall_verdict(_result(before, {**after, "general/ppl": 25.0}))["kept"] == "no"  # +25%
    report = format_report({**_result(before, after), "rows": {"forget": 2, "retain": 2, "forget_documents": 2},
                            "training": {"num_train_epochs": 1, "learning_rate": 1e-3}, "model": "m", "method": "npo",
                            "method_settings": {}, "train_seconds": 1.0, "paths": {}, "caveats": []})
    assert "General ability" in report and "general knowledge" in report and "20.000 ->" in report


def test_general_sets_are_checked_before_a_model_loads(memorised_rows, tmp_path, capsys):
    docs = [r["input"] + " " + r["output"] for r in memorised_rows["forget"]]
    (tmp_path / "forget.txt").write_text("\n\n".join(docs) + "\n")
    (tmp_path / "r.txt").write_text("Some retained text here.\n")
    base = ["unlearn", "--model", str(tmp_path / "no-such-model"), "--forget", str(tmp_path / "forget.txt"),
            "--retain", str(tmp_path / "r.txt"), "--output-dir", str(tmp_path / "out")]
    (tmp_path / "general.txt").write_text("A general text about rivers.\n\n" + docs[1] + "\n")
    assert cli_main(base + ["--general-text", str(tmp_path / "general.txt")]) == 2
    err = capsys.readouterr().err
    assert "--general-text: document 2 is also a forget document" in err and docs[1][:30] not in err
    _write_jsonl(tmp_path / "q.jsonl", [{"question": "Capital of France?", "answer": "Paris"}, {"question": "x?"}])
    assert cli_main(base + ["--general-questions", str(tmp_path / "q.jsonl")]) == 2
    assert "--general-questions" in (err := capsys.readouterr().err) and "line 2: field 'answer'" in err
    assert cli_main(base + ["--mmlu", str(tmp_path)]) == 2
    assert "--mmlu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unlearn_scores_general_ability_before_and_after(saved_target, memorised_rows, lume_dir, tmp_path):
    from hf_unlearn.compare import Checks

    from .conftest import SHARED_DATA, read_jsonl

    forget = _write_jsonl(tmp_path / "forget.jsonl", memorised_rows["forget"][:4])
    retain = _write_jsonl(tmp_path / "retain.jsonl", memorised_rows["retain"][:4])
    general = _write_jsonl(tmp_path / "general.jsonl",
                           [{"text": r["document"]} for r in read_jsonl(lume_dir / "mia" / "nonmember.jsonl")[:4]])
    out = tmp_path / "out"
    assert cli_main(["unlearn", "--model", str(saved_target), "--forget", str(forget), "--retain", str(retain),
                     "--general-text", str(general),
                     "--general-questions", str(SHARED_DATA / "tofu" / "world_facts.jsonl"),
                     "--mmlu", str(SHARED_DATA / "mmlu"), "--mmlu-limit", "1",
                     "--output-dir", str(out), "--num-train-epochs", "1", "--probes", "none",
                     "--max-new-tokens", "8"]) == 0
    result = json.loads((out / "unlearn.json").read_text())
    before, after = result["scores"]["before"], result["scores"]["after"]
    for key in ("general/ppl", "general/knowledge", "general/mmlu"):
        assert key in before and key in after
    assert before["general/ppl"] > 1 and 0 <= after["general/mmlu"] <= 1
    assert result["general"] == {"documents": 4, "questions": len(read_jsonl(SHARED_DATA / "tofu" /
                                                                              "world_facts.jsonl")), "mmlu_limit": 1}
    assert "General ability" in (out / "report.md").read_text()
    # compare's checks read the same keys
    assert "general knowledge within 0.05" in Checks().failed({**before, "general/knowledge": 0.5},
                                                              {**after, "general/knowledge": 0.3})
    assert not any("general" in f for f in Checks().failed(before, {**after, **{k: before[k] for k in before
                                                                                if k.startswith("general/")}}))


def test_influence_runs_libu_from_the_job_and_its_fields_need_it(saved_target, memorised_rows, tmp_path, capsys):
    """`--influence`: LIBU (InfluenceUnlearningTrainer: the influence step, then Sophia) in the user's job, its fields
    through --trainer-arg; without it those fields are refused before any model loads, naming the flag."""
    forget = _write_jsonl(tmp_path / "forget.jsonl", memorised_rows["forget"])
    retain = _write_jsonl(tmp_path / "retain.jsonl", memorised_rows["retain"])
    args = ["unlearn", "--model", str(saved_target), "--forget", str(forget), "--retain", str(retain),
            "--method", "gd", "--retain-nll-weight", "1", "--num-train-epochs", "1", "--learning-rate", "1e-3",
            "--probes", "none", "--no-merge", "--max-new-tokens", "16"]
    assert cli_main(args + ["--output-dir", str(tmp_path / "refused"), "--trainer-arg", "damping=1e-2"]) == 2
    assert "needs --influence" in capsys.readouterr().err and not (tmp_path / "refused" / "adapter").exists()
    assert cli_main(args + ["--output-dir", str(tmp_path / "out"), "--influence",
                            "--trainer-arg", "damping=1e-2", "hessian_interval=2"]) == 0
    result = json.loads((tmp_path / "out" / "unlearn.json").read_text())
    influence = result["training"]["influence"]
    assert influence["damping"] == 1e-2 and influence["unlearn_optim"] == "sophia" and influence["hessian_interval"] == 2
    assert influence["update_norm"] > 0 and result["method"] == "gd"
    assert "after LIBU's influence step" in (tmp_path / "out" / "report.md").read_text()
