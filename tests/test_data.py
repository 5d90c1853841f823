"""LUME loading, row checks with precise messages, tokenisation with prompt masking, and forget/retain pairing."""

import json
import os
import subprocess
import sys
import traceback

import pytest
from datasets import Dataset

from hf_unlearn import DataValidationError, load_lume
from hf_unlearn.data import ForgetRetainSampler, lume, UnlearningCollator, tokenize_dataset, tokenize_row
from hf_unlearn.losses import IGNORE_INDEX


def test_load_lume_local_jsonl(lume_dir):
    forget, retain = load_lume(lume_dir, split="train")
    assert (len(forget), len(retain)) == (1112, 1136)
    assert {"id", "input", "output", "task"} <= set(forget.column_names)
    forget_val, retain_val = load_lume(str(lume_dir), split="validation")
    assert (len(forget_val), len(retain_val)) == (254, 278)


def test_load_lume_hub_release_parquet_layout(lume_dir, tmp_path):
    (tmp_path / "data").mkdir()
    for subset in ("forget", "retain"):
        rows = [json.loads(line) for line in open(lume_dir / f"{subset}_validation.jsonl")]
        Dataset.from_list(rows).to_parquet(str(tmp_path / "data" / f"{subset}_validation-00000-of-00001.parquet"))
    forget, retain = load_lume(tmp_path, split="validation")
    assert (len(forget), len(retain)) == (254, 278)


def write_split(folder, forget_lines, retain_lines=('{"input": "a", "output": "b"}',)):
    folder.mkdir(exist_ok=True)
    (folder / "forget_train.jsonl").write_text("\n".join(forget_lines) + "\n")
    (folder / "retain_train.jsonl").write_text("\n".join(retain_lines) + "\n")
    return folder


def test_bad_files_name_file_and_line(tmp_path):
    with pytest.raises(DataValidationError, match="LUME data folder not found"):
        load_lume(tmp_path / "nope")
    folder = write_split(tmp_path / "a", ['{"input": "x", "output": "y"}', '{"input": "x", "output": '])
    with pytest.raises(DataValidationError, match=r"forget_train\.jsonl, line 2: invalid JSON"):
        load_lume(folder)
    folder = write_split(tmp_path / "b", ['{"input": "x", "output": "y"}', '{"input": "x"}'])
    with pytest.raises(DataValidationError, match=r"forget_train\.jsonl, line 2: no field 'output'"):
        load_lume(folder)
    folder = write_split(tmp_path / "c", ['{"input": "x", "output": 3}'])
    with pytest.raises(DataValidationError, match=r"line 1: field 'output' must be a string, got int"):
        load_lume(folder)
    folder = write_split(tmp_path / "d", [""])
    with pytest.raises(DataValidationError, match=r"forget_train\.jsonl is empty"):
        load_lume(folder)
    folder = write_split(tmp_path / "e", ['{"input": "x", "output": "y"}'])
    (folder / "retain_train.jsonl").unlink()
    with pytest.raises(DataValidationError, match=r"No retain 'train' split"):
        load_lume(folder)


def test_bad_file_messages_do_not_quote_row_text(tmp_path):
    secret = "CANARY-4242 lives at 1 Secret Road"
    folder = write_split(tmp_path / "s", [json.dumps({"input": secret, "output": 7})])
    with pytest.raises(DataValidationError) as err:
        load_lume(folder)
    assert "CANARY" not in str(err.value)


CANARY = "CANARY-ZQXJ-9917 lives at 1 Secret Road, +44 7700 900917"


def full_traceback(err: pytest.ExceptionInfo) -> str:
    return "".join(traceback.format_exception(err.value))


@pytest.mark.parametrize(
    "lines, message",
    [
        # a number amid string outputs, after and before them: pyarrow would quote the other row's text
        ([{"input": "q", "output": CANARY}, {"input": "q", "output": 5}],
         r"forget_train\.jsonl, line 2: field 'output' must be a string, got int"),
        ([{"input": "q", "output": [CANARY]}, {"input": CANARY, "output": CANARY}],
         r"forget_train\.jsonl, line 1: field 'output' must be a string, got list"),
        ([{"input": CANARY, "output": "a"}, {"input": "q", "output": "b", "task": 2}],
         r"line 2: field 'task' must be a string, got int"),
        ([{"input": "q", "output": "a", "note": CANARY}, {"input": "q", "output": "b", "note": 3.5}],
         r"line 2: field 'note' is a number, but a string at line 1"),
        ([{"input": "q", "output": "a", "tags": [CANARY]}, {"input": "q", "output": "b", "tags": [1]}],
         r"forget_train\.jsonl: the rows cannot be stored as columns"),
    ],
)
def test_mixed_field_types_name_file_line_and_field_never_the_text(tmp_path, lines, message):
    folder = write_split(tmp_path / "m", [json.dumps(line) for line in lines])
    with pytest.raises(DataValidationError, match=message) as err:
        load_lume(folder)
    assert "CANARY" not in full_traceback(err)  # nor in a chained pyarrow exception


def test_mixed_types_in_the_parquet_layout_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    table = pa.table({"input": ["q", "q"], "output": [CANARY, None]})
    pq.write_table(table, tmp_path / "data" / "forget_train-00000-of-00001.parquet")
    pq.write_table(pa.table({"input": ["q"], "output": ["a"]}), tmp_path / "data" / "retain_train-00000-of-00001.parquet")
    with pytest.raises(DataValidationError, match=r"forget_train-00000-of-00001\.parquet, row 1: field 'output' is "
                                                  r"missing") as err:
        load_lume(tmp_path)
    assert "CANARY" not in full_traceback(err)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    folder = write_split(tmp_path / "bom", ['{"input": "x", "output": "y"}'])
    path = folder / "forget_train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    forget, _ = load_lume(folder)
    assert forget[0]["input"] == "x"


def test_a_mistyped_local_path_is_never_sent_to_the_hub(tmp_path, monkeypatch):
    def no_hub(*args):
        raise AssertionError("a Hub request was made")

    monkeypatch.setattr(lume, "_download_release", no_hub)
    monkeypatch.chdir(tmp_path)
    for name in ("does_not_exist_dir", "./owner/name", "data/lume/", "~/lume"):
        with pytest.raises(DataValidationError, match="LUME data folder not found"):
            load_lume(name)


LOAD_EACH_LAYOUT = """
import shutil, sys
from pathlib import Path
from hf_unlearn.data import lume

src = Path(sys.argv[1])
for layout in ("jsonl", "parquet"):
    forget, retain = lume.load_lume(src / layout, split="validation")
    # What examples/run_npo.py --num_rows does next: filter and select must not write cache files either.
    forget.filter(lambda r: r["task"] == "Task2").select(range(2)).map(lambda r: {"n": len(r["output"])})

def fake_download(repo_id, split, folder):  # stands in for the network call only
    shutil.copytree(src / "parquet" / "data", folder / "data")

lume._download_release = fake_download
forget, retain = lume.load_lume("owner/lume-release", split="validation")
assert CANARY in forget[0]["output"]
print("loaded", len(forget), len(retain))
"""


def test_loading_leaves_no_copy_of_the_forget_set_under_home_or_tmp(lume_rows, tmp_path):
    rows = [dict(r, output=f"{r['output']} {CANARY}") for r in lume_rows["forget_validation"][:6]]
    rows += lume_rows["forget_validation"][6:20]
    src = tmp_path / "src"
    (src / "jsonl").mkdir(parents=True)
    (src / "parquet" / "data").mkdir(parents=True)
    for subset, subset_rows in (("forget", rows), ("retain", lume_rows["retain_validation"][:20])):
        (src / "jsonl" / f"{subset}_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in subset_rows))
        Dataset.from_list(subset_rows).to_parquet(
            str(src / "parquet" / "data" / f"{subset}_validation-00000-of-00001.parquet")
        )
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    for name in ("HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        env.pop(name, None)  # everything defaults to under HOME
    script = f"CANARY = {CANARY!r}\n" + LOAD_EACH_LAYOUT
    result = subprocess.run([sys.executable, "-c", script, str(src)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded 20 20" in result.stdout
    leaked = [p for root in (home, tmp) for p in root.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaked == []
    assert not list(tmp.iterdir())  # the download folder was removed


def test_tokenize_row_masks_the_prompt(tokenizer):
    features, truncated = tokenize_row(tokenizer, "The capital of France is", "Paris.")
    prompt = tokenizer("The capital of France is")["input_ids"]
    answer = tokenizer("Paris.", add_special_tokens=False)["input_ids"]
    assert features["input_ids"] == prompt + answer + [tokenizer.eos_token_id]
    assert features["labels"] == [IGNORE_INDEX] * len(prompt) + answer + [tokenizer.eos_token_id]
    assert not truncated
    whole, _ = tokenize_row(tokenizer, "The capital of France is", "Paris.", loss_on_prompt=True)
    assert whole["labels"] == whole["input_ids"]


def test_truncation_keeps_the_answer_and_warns(tokenizer, caplog):
    rows = Dataset.from_list([{"input": "word " * 50, "output": "the answer"}, {"input": "a", "output": "b"}])
    with caplog.at_level("WARNING"):
        features = tokenize_dataset(rows, tokenizer, "forget_dataset", max_length=8)
    assert len(features) == 2  # never dropped
    answer = tokenizer("the answer", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(features[0]["input_ids"]) == 8 and features[0]["input_ids"][-len(answer) :] == answer
    assert "1 row(s) longer than max_length=8" in caplog.text and "rows 0" in caplog.text
    assert "word" not in caplog.text


def test_collator_pads_right(tokenizer):
    collator = UnlearningCollator(pad_token_id=tokenizer.pad_token_id)
    a, _ = tokenize_row(tokenizer, "short", "x")
    b, _ = tokenize_row(tokenizer, "a much longer prompt here", "y")
    batch = collator([{"forget": a, "retain": b}, {"forget": b, "retain": a}])
    assert batch["forget_input_ids"].shape == batch["retain_input_ids"].shape
    assert batch["forget_attention_mask"][0].tolist() == [1] * len(a["input_ids"]) + [0] * (
        len(b["input_ids"]) - len(a["input_ids"])
    )
    assert batch["forget_labels"][0, len(a["input_ids"]) :].eq(IGNORE_INDEX).all()


def test_sampler_epochs_cycle_the_retain_set_and_are_reproducible():
    sampler = ForgetRetainSampler(num_forget=5, num_retain=3, seed=1)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    for pairs in epochs:
        assert sorted(f for f, _ in pairs) == list(range(5))  # each epoch is one pass over the forget set
    retain_stream = [r for pairs in epochs for _, r in pairs]
    for cycle in range(5):  # 15 positions = 5 full passes over the 3 retain rows, each its own permutation
        assert sorted(retain_stream[3 * cycle : 3 * cycle + 3]) == [0, 1, 2]
    again = ForgetRetainSampler(num_forget=5, num_retain=3, seed=1)
    again.set_epoch(2)
    assert list(again) == epochs[2]  # depends only on (seed, epoch): resume sees the same rows
    other = ForgetRetainSampler(num_forget=5, num_retain=3, seed=2)
    other.set_epoch(2)
    assert list(other) != epochs[2]


def test_pad_is_the_one_padding_routine_for_both_sides():
    from hf_unlearn.data.collator import pad, pad_ids

    ids, mask = pad_ids([[5, 6, 7], [8], []], 0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]] and mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    ids, mask = pad_ids([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pad([[1], [2, 3]], -100).tolist() == [[1, -100], [2, 3]]
    with pytest.raises(ValueError, match="side must be 'right' or 'left', got 'middle'"):
        pad([[1]], 0, side="middle")


def test_files_that_are_not_utf8_are_refused_naming_the_file_and_line(tmp_path):
    from hf_unlearn.data.documents import load_rows

    (tmp_path / "bin.txt").write_bytes(b"\xc0\xc1 binary")
    with pytest.raises(DataValidationError, match=r"bin.txt, line 1: not UTF-8 text \(byte 0xc0\)"):
        load_rows(tmp_path / "bin.txt", "forget")
    (tmp_path / "latin.jsonl").write_bytes(b'{"input": "a", "output": "b"}\n{"input": "caf\xe9", "output": "b"}\n')
    with pytest.raises(DataValidationError, match=r"latin.jsonl, line 2: not UTF-8 text \(byte 0xe9\)"):
        load_rows(tmp_path / "latin.jsonl", "forget")
    # a line separator inside a JSON string is text, not a line break
    (tmp_path / "ok.jsonl").write_text(json.dumps({"input": "a\u2028b", "output": "c"}, ensure_ascii=False) + "\n")
    assert load_rows(tmp_path / "ok.jsonl", "forget")[0][0]["input"] == "a\u2028b"


def test_a_path_that_cannot_be_a_hub_id_is_refused_at_once(tmp_path):
    from hf_unlearn.pretrained import looks_like_hub_id, resolve_model_path

    for name in (str(tmp_path / "missing"), "./missing", "../models/x", "~/models/x", "a/b/c", "a--b", "x/../y"):
        assert not looks_like_hub_id(name)
        with pytest.raises(FileNotFoundError, match="model folder not found"):
            resolve_model_path(name)
    assert looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") and looks_like_hub_id("gpt2")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)  # an existing folder is used as it is


def test_a_model_path_that_is_a_file_and_an_accumulation_of_zero_are_refused(tmp_path):
    from hf_unlearn import UnlearningConfig
    from hf_unlearn.pretrained import resolve_model_path

    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file: give the folder"):
        resolve_model_path(str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be at least 1"):
        UnlearningConfig(output_dir=str(tmp_path / "o"), gradient_accumulation_steps=0, report_to="none")


def test_tofu_files_are_read_as_they_are():
    """TOFU rows (`question`, `answer`) are rows with TOFU's plain prompt, and unseen TOFU rows are documents in the
    forget documents' own form."""
    from hf_unlearn.data.documents import load_rows, read_documents

    from .conftest import SHARED_DATA

    rows, documents = load_rows(SHARED_DATA / "tofu" / "forget01_perturbed.jsonl", "forget")
    first = json.loads((SHARED_DATA / "tofu" / "forget01_perturbed.jsonl").read_text().splitlines()[0])
    assert len(rows) == 40 and rows[0]["input"] == f"Question: {first['question']}\nAnswer: "
    assert rows[0]["output"] == first["answer"] and rows[0]["id"].endswith("sc0")
    assert rows[0]["paraphrased_input"] == f"Question: {first['paraphrased_question']}\nAnswer: "
    assert documents[0] == f"{rows[0]['input']} {rows[0]['output']}"
    texts, _ = read_documents(SHARED_DATA / "tofu" / "holdout01.jsonl")
    holdout = json.loads((SHARED_DATA / "tofu" / "holdout01.jsonl").read_text().splitlines()[0])
    assert texts[0] == f"Question: {holdout['question']}\nAnswer:  {holdout['answer']}"
