"""Data: the LUME loader, row checks, tokenisation with prompt masking, forget/retain pairing."""

from .collator import UnlearningCollator, tokenize_dataset, tokenize_row
from .lume import DataValidationError, load_lume, read_jsonl, read_mia_documents, validate_rows
from .pairing import ChunkedForgetRetainSampler, ForgetRetainDataset, ForgetRetainSampler

__all__ = [
    "ChunkedForgetRetainSampler",
    "DataValidationError",
    "ForgetRetainDataset",
    "ForgetRetainSampler",
    "UnlearningCollator",
    "load_lume",
    "read_jsonl",
    "read_mia_documents",
    "tokenize_dataset",
    "tokenize_row",
    "validate_rows",
]
