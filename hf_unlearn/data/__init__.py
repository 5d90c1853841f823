"""Data: the LUME loader, row checks, tokenisation with prompt masking, forget/retain pairing."""

from .collator import UnlearningCollator, pad_features, tokenize_dataset, tokenize_document, tokenize_documents, tokenize_row
from .lume import DataValidationError, load_lume, read_jsonl, read_mia_documents, validate_rows
from .documents import document_of, document_texts, document_units, rows_to_documents, rows_to_units
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
    "document_of",
    "document_texts",
    "document_units",
    "pad_features",
    "rows_to_documents",
    "rows_to_units",
    "tokenize_dataset",
    "tokenize_document",
    "tokenize_documents",
    "tokenize_row",
    "validate_rows",
]
