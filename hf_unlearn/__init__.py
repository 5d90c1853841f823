"""hf_unlearn: make a causal language model forget specific training data, and measure it."""

__version__ = "0.1.0.dev0"

# Before anything imports torch: idle OpenMP workers sleep instead of spinning (see threads.py).
from .threads import passive_wait  # noqa: E402

passive_wait()


from .callbacks import LumeEvaluationCallback, TimeBudgetCallback, TofuEvaluationCallback, plot_history
from .config import InfluenceUnlearningConfig, UnlearningConfig
from .data import DataValidationError, load_lume
from .influence import InfluenceUnlearningTrainer
from .stopping import UnseenLevelStoppingCallback
from .support.synthetic import generate_lume_like, write_lume_like
from .trainer import UnlearningTrainer

__all__ = [
    "DataValidationError",
    "InfluenceUnlearningConfig",
    "InfluenceUnlearningTrainer",
    "LumeEvaluationCallback",
    "TofuEvaluationCallback",
    "TimeBudgetCallback",
    "UnlearningConfig",
    "UnlearningTrainer",
    "UnseenLevelStoppingCallback",
    "__version__",
    "generate_lume_like",
    "load_lume",
    "plot_history",
    "write_lume_like",
]
