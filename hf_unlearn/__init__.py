"""hf_unlearn: make a causal language model forget specific training data, and measure it."""

__version__ = "0.1.0.dev0"

from .config import UnlearningConfig
from .data import DataValidationError, load_lume
from .trainer import UnlearningTrainer

__all__ = ["DataValidationError", "UnlearningConfig", "UnlearningTrainer", "__version__", "load_lume"]
