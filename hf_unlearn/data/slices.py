"""A slice of a JSON-lines file, `{file: X.jsonl, rows: N, skip: M}` in an experiment file: its rows M+1 to M+N, written
as a file of their own (keyed by its contents like any data file), so an experiment can take part of a large file
(TOFU's retain90, LUME's Wikipedia nonmembers) without a copy of it beside the experiment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Slice:
    file: str
    rows: int
    skip: int = 0


def parse_slice(value: Any, where: str) -> Slice:
    """`value` (a mapping) as a `Slice`; anything else is refused naming `where` (e.g. `exp.yaml: data.retain`)."""
    rows, skip = value.get("rows"), value.get("skip", 0)
    if not set(value) <= {"file", "rows", "skip"} or "file" not in value or any(
            isinstance(n, bool) or not isinstance(n, int) for n in (rows, skip)) or rows < 1 or skip < 0:
        raise ValueError(f"{where}: a file, or {{file: FILE.jsonl, rows: N}} (its first N rows, N >= 1; skip: M "
                         "starts after the first M)")
    if not str(value["file"]).endswith(".jsonl"):
        raise ValueError(f"{where}.file: rows are taken from a JSON-lines file (.jsonl)")
    return Slice(str(value["file"]), rows, skip)


def is_slice(value: Any) -> bool:
    return isinstance(value, Mapping)


def write_slice(piece: Slice, out: Path, where: str) -> str:
    """Write `piece`'s rows (of `piece.file`, a resolved path) to `out` atomically; returns `out`'s resolved path.
    A file with too few rows is refused naming `where`."""
    lines = [line for line in Path(piece.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < piece.skip + piece.rows:
        raise ValueError(f"{where}: {piece.file} has {len(lines)} rows, fewer than rows: {piece.rows}"
                         + (f" after skip: {piece.skip}" if piece.skip else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_text("\n".join(lines[piece.skip: piece.skip + piece.rows]) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return str(out.resolve())
