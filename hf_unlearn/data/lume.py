"""Loading the LUME (SemEval-2025 Task 4) splits, and checking any forget/retain data before training.

Error messages name the file, line or row index and the field, never the row's text or id: the forget set is the
data a user is trying to erase.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets import Dataset

LUME_COLUMNS = ("id", "input", "output", "task")
REQUIRED_COLUMNS = ("input", "output")


class DataValidationError(ValueError):
    """A data file or dataset that cannot be used for unlearning; the message names where and what."""


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, refusing a missing or empty file and invalid JSON with the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"Data file not found: {path}.")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataValidationError(
                    f"{path}, line {lineno}: invalid JSON ({err.msg} at column {err.colno}). "
                    "Each line must be one JSON object."
                ) from None
            if not isinstance(row, dict):
                raise DataValidationError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    if not rows:
        raise DataValidationError(f"{path} is empty: it holds no rows.")
    return rows


def validate_rows(dataset: Dataset, name: str, source: str | None = None) -> None:
    """Check that `dataset` has non-empty string `input` and `output` in every row.

    `name` says which set it is (e.g. `"forget_dataset"`); `source` (a file) is added to messages when known.
    Row numbers are 0-based indices into the dataset (for a JSON-lines file, line N is row N - 1 when it has no
    blank lines).
    """
    where = f"{name} ({source})" if source else name
    if len(dataset) == 0:
        raise DataValidationError(f"{where} is empty: unlearning needs at least one row.")
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataValidationError(
            f"{where} has no {' or '.join(repr(c) for c in missing)} column (columns: {dataset.column_names}). "
            "Each row needs an 'input' (the prompt) and an 'output' (the text to unlearn or retain); rename your "
            "columns with `dataset.rename_column`."
        )
    for column in REQUIRED_COLUMNS:
        for index, value in enumerate(dataset[column]):
            if value is None:
                raise DataValidationError(f"{where}, row {index}: field {column!r} is missing (null).")
            if not isinstance(value, str):
                raise DataValidationError(
                    f"{where}, row {index}: field {column!r} must be a string, got {type(value).__name__}."
                )
    empty = [i for i, v in enumerate(dataset["output"]) if not v.strip()]
    if empty:
        raise DataValidationError(f"{where}, row {empty[0]}: field 'output' is empty; nothing to learn or unlearn.")


def _rows_to_dataset(rows: list[dict], path: Path) -> Dataset:
    for index, row in enumerate(rows):
        for column in REQUIRED_COLUMNS:
            if column not in row:
                raise DataValidationError(
                    f"{path}, row {index}: no field {column!r} (fields: {sorted(row)}). Each row needs 'input' and "
                    "'output'."
                )
    dataset = Dataset.from_list(rows)
    validate_rows(dataset, path.name, source=str(path))
    return dataset


def _local_split(root: Path, subset: str, split: str) -> Dataset:
    jsonl = root / f"{subset}_{split}.jsonl"
    parquet = root / "data" / f"{subset}_{split}-00000-of-00001.parquet"
    if jsonl.is_file():
        return _rows_to_dataset(read_jsonl(jsonl), jsonl)
    if parquet.is_file():
        dataset = Dataset.from_parquet(str(parquet))
        validate_rows(dataset, parquet.name, source=str(parquet))
        return dataset
    raise DataValidationError(
        f"No {subset} {split!r} split in {root}: expected {jsonl.name} or data/{parquet.name} (the Hub release's "
        "layout)."
    )


def load_lume(path_or_repo_id: str | os.PathLike, split: str = "train") -> tuple[Dataset, Dataset]:
    """Load the LUME forget and retain sets of one split (`"train"` or `"validation"`).

    `path_or_repo_id` is a local folder holding `forget_{split}.jsonl` / `retain_{split}.jsonl` (like
    `../shared/data/lume`) or the Hub release's `data/{forget,retain}_{split}-00000-of-00001.parquet`, or else a Hub
    dataset repo id (e.g. the organisers' gated `llmunlearningsemeval2025organization/semeval25-unlearning-dataset-
    public`) loaded through `datasets`. Returns `(forget, retain)` as `datasets.Dataset`s with columns
    `id, input, output, task` (and whatever else the files hold).
    """
    root = Path(path_or_repo_id)
    if root.is_dir():
        return _local_split(root, "forget", split), _local_split(root, "retain", split)
    if root.exists() or str(path_or_repo_id).startswith((".", "/", "~")):
        raise DataValidationError(f"LUME data folder not found: {path_or_repo_id}.")
    from datasets import load_dataset

    repo_id = str(path_or_repo_id)
    out = []
    for subset in ("forget", "retain"):
        dataset = load_dataset(repo_id, split=f"{subset}_{split}")
        validate_rows(dataset, f"{repo_id}:{subset}_{split}")
        out.append(dataset)
    return out[0], out[1]
