"""A registry of optimizers that can be picked by name.

transformers' `OptimizerNames` is a closed enum, so an optimizer of our own (Sophia) cannot be chosen with
`TrainingArguments(optim=...)`. Instead, optimizers register themselves here under a short name where they are
defined (peft style):

```python
from hf_unlearn.optim import register_optimizer


@register_optimizer("my_optimizer")
class MyOptimizer(torch.optim.Optimizer): ...
```

and the trainer resolves the name with [`get_optimizer_cls`] in its `get_optimizer_cls_and_kwargs`. The mapping
starts empty; importing `hf_unlearn.optim` registers the built-in optimizers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import torch

OptimizerT = TypeVar("OptimizerT", bound=type[torch.optim.Optimizer])

OPTIMIZER_REGISTRY: dict[str, type[torch.optim.Optimizer]] = {}
"""Registered optimizer classes, keyed by name. Filled by `@register_optimizer(name)`; read it, don't write it."""

# Lowercase identifier-like: the name travels through CLI flags and YAML configs, so keep it unambiguous.
_VALID_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _qualified_name(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def register_optimizer(name: str) -> Callable[[OptimizerT], OptimizerT]:
    """Class decorator that registers a `torch.optim.Optimizer` subclass under `name`.

    Args:
        name (`str`):
            A non-empty lowercase identifier (letters, digits and underscores, starting with a letter), e.g.
            `"sophia"`.

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        ValueError: if `name` is not a valid name, or is already registered (the error names the class holding it).
        TypeError: if the decorated object is not a `torch.optim.Optimizer` subclass.
    """
    # Validate eagerly, so a bad name fails at the decorator line rather than at first use.
    if not isinstance(name, str) or _VALID_NAME.fullmatch(name) is None:
        raise ValueError(
            f"Invalid optimizer name {name!r}: use a non-empty lowercase identifier (letters, digits and "
            "underscores, starting with a letter), e.g. 'sophia'."
        )

    def decorator(cls: OptimizerT) -> OptimizerT:
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError(
                f"@register_optimizer({name!r}) expects a torch.optim.Optimizer subclass, got {_qualified_name(cls)}."
            )
        if name in OPTIMIZER_REGISTRY:
            existing = OPTIMIZER_REGISTRY[name]
            raise ValueError(
                f"Optimizer name {name!r} is already registered to {_qualified_name(existing)}; "
                f"cannot register {_qualified_name(cls)} under the same name. Choose another name."
            )
        OPTIMIZER_REGISTRY[name] = cls
        return cls

    return decorator


def get_optimizer_cls(name: str) -> type[torch.optim.Optimizer]:
    """Return the optimizer class registered under `name` (case-insensitive).

    Raises:
        ValueError: if nothing is registered under `name`; the message lists the registered names and how to
            register a new one.
    """
    key = name.lower() if isinstance(name, str) else name
    try:
        return OPTIMIZER_REGISTRY[key]
    except (KeyError, TypeError):
        known = ", ".join(repr(n) for n in sorted(OPTIMIZER_REGISTRY)) or "none"
        raise ValueError(
            f"Unknown optimizer {name!r}. Registered optimizers: {known}. To add one, decorate a "
            "torch.optim.Optimizer subclass with `@hf_unlearn.optim.register_optimizer('your_name')` and make sure "
            "its module is imported before the trainer is built."
        ) from None
