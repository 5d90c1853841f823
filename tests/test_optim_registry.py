"""The optimizer registry: lookup by name, clear errors, registration where the optimizer is defined."""

from __future__ import annotations

import pytest
import torch

from hf_unlearn.optim import OPTIMIZER_REGISTRY, SophiaG, get_optimizer_cls, register_optimizer


@pytest.fixture
def scratch_names():
    """Names a test registers; removed afterwards so tests cannot leak into each other."""
    names: list[str] = []
    yield names
    for name in names:
        OPTIMIZER_REGISTRY.pop(name, None)


def test_sophia_is_registered_by_importing_the_package():
    assert OPTIMIZER_REGISTRY["sophia"] is SophiaG
    assert get_optimizer_cls("sophia") is SophiaG
    assert get_optimizer_cls("Sophia") is SophiaG  # names from a CLI may arrive capitalised


def test_unknown_name_lists_the_registered_ones_and_how_to_register():
    with pytest.raises(ValueError) as excinfo:
        get_optimizer_cls("adamw_sophia")
    message = str(excinfo.value)
    assert "'adamw_sophia'" in message
    assert "'sophia'" in message  # the known names
    assert "register_optimizer" in message  # how to add one


def test_register_a_new_optimizer(scratch_names):
    @register_optimizer("scratch_sgd")
    class ScratchSGD(torch.optim.SGD):
        pass

    scratch_names.append("scratch_sgd")
    assert get_optimizer_cls("scratch_sgd") is ScratchSGD
    with pytest.raises(ValueError, match="Registered optimizers: 'scratch_sgd', 'sophia'"):  # listed, sorted
        get_optimizer_cls("nope")


def test_duplicate_name_is_refused_and_names_the_existing_class(scratch_names):
    with pytest.raises(ValueError, match=r"already registered to hf_unlearn\.optim\.sophia\.SophiaG"):

        @register_optimizer("sophia")
        class AnotherSophia(torch.optim.SGD):
            pass

    assert OPTIMIZER_REGISTRY["sophia"] is SophiaG  # the original registration is untouched


@pytest.mark.parametrize("name", ["", "Sophia", "1cycle", "my-optimizer", "my optimizer", "_private", None, 3])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="Invalid optimizer name"):
        register_optimizer(name)
    assert name not in OPTIMIZER_REGISTRY


def test_only_optimizer_classes_can_be_registered():
    with pytest.raises(TypeError, match="torch.optim.Optimizer subclass"):
        register_optimizer("not_an_optimizer")(dict)
    with pytest.raises(TypeError):
        register_optimizer("a_function")(lambda params: torch.optim.SGD(params, lr=0.1))
    assert "not_an_optimizer" not in OPTIMIZER_REGISTRY and "a_function" not in OPTIMIZER_REGISTRY
