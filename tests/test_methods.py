"""The method registry and the method contract: names, lookups, hyperparameters as config fields and flags, the
per-step context, and a method defined outside the package trained through the real trainer."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch
from datasets import Dataset
from transformers import HfArgumentParser

from hf_unlearn import UnlearningConfig, UnlearningTrainer
from hf_unlearn.hub import model_card, training_record
from hf_unlearn.methods import (
    BUILTIN_ARGUMENTS,
    METHOD_REGISTRY,
    StepContext,
    StepCounts,
    UnlearningMethod,
    get_method,
    register_method,
)

from .conftest import short_rows
from .test_trainer import answer_distributions, lora, make_config

BUILTIN = ["npo", "ga", "gd", "kl", "simnpo", "undial", "wga", "satimp", "rmu", "anchored", "pre_finetuning_distill"]


@pytest.fixture
def registry_guard():
    """Remove whatever a test registers, so the registry is the built-in one again for the next test."""
    before = dict(METHOD_REGISTRY)
    yield
    METHOD_REGISTRY.clear()
    METHOD_REGISTRY.update(before)


@pytest.fixture(scope="module")
def rows(lume_rows):
    return short_rows(lume_rows["forget_train"], n=4), short_rows(lume_rows["retain_train"], n=4)


def test_builtin_methods_are_registered_in_order_with_a_paper_each():
    assert list(METHOD_REGISTRY)[: len(BUILTIN)] == BUILTIN
    for name in BUILTIN:
        cls = get_method(name)
        assert cls.name == name and cls.description and cls.paper


def test_lookup_of_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"Unknown unlearning method 'nope'\. Choose one of: npo, ga, gd, kl, simnpo, "
                                         r"undial, wga, satimp, rmu"):
        get_method("nope")


def test_a_taken_name_is_refused_and_the_first_method_stays(registry_guard):
    class Other(UnlearningMethod):
        name = "npo"

    with pytest.raises(ValueError, match=r"An unlearning method named 'npo' is already registered \(hf_unlearn\.methods"
                                         r"\.npo\.NPO\); choose another name"):
        register_method(Other)
    assert get_method("npo").__module__ == "hf_unlearn.methods.npo"
    with pytest.raises(ValueError, match="Invalid unlearning method name 'Bad Name'"):
        register_method(Other, name="Bad Name")
    with pytest.raises(TypeError, match="takes an UnlearningMethod subclass"):
        register_method(object)


def test_builtin_hyperparameters_are_documented_config_fields_and_flags():
    parser = HfArgumentParser(UnlearningConfig)
    help_text = parser.format_help()
    for arguments in BUILTIN_ARGUMENTS:
        doc = arguments.__doc__
        for f in dataclasses.fields(arguments):
            assert f.name in UnlearningConfig.__dataclass_fields__, f.name
            assert f"{f.name} (`" in doc, f"{f.name} is not in the Parameters: of {arguments.__name__}"
            assert f.metadata.get("help"), f.name
            assert f"--{f.name}" in help_text, f.name


def test_config_validates_method_hyperparameters(tmp_path):
    for kwargs, message in [
        (dict(method="simnpo", simnpo_beta=0.0), "simnpo_beta must be > 0"),
        (dict(method="undial", undial_beta=-1.0), "undial_beta must be >= 0"),
        (dict(method="wga", wga_beta=-1.0), "wga_beta must be >= 0"),
        (dict(method="satimp", satimp_beta2=-1.0), "satimp_beta2 must be >= 0"),
        (dict(method="rmu", rmu_layer=-1), "rmu_layer must be an integer >= 0"),
        (dict(method="rmu", rmu_steering_coeff=0.0), "rmu_steering_coeff must be > 0"),
        (dict(method="npo", npo_level="word"), "npo_level must be one of"),
        (dict(method="simnpo", precompute_ref_log_probs=True), "precompute_ref_log_probs=True only applies to "
                                                               "method='npo' \\(method='simnpo'"),
        (dict(method="rmu", simnpo_beta=float("nan")), "simnpo_beta must be a finite number"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_config(tmp_path, **kwargs)


def test_step_context_normalises_by_the_whole_step():
    # A micro-batch of 2 rows and 3 answer tokens, inside a step of 4 rows and 10 answer tokens.
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    counts = StepCounts(torch.tensor([10.0, 6.0, 4.0, 2.0]))
    ctx = StepContext(counts=counts, forget_labels=None, forget_logits=None, forget_logp=None, forget_mask=mask,
                      forget_nll=torch.zeros(()), retain_mask=torch.ones(1, 3))
    values = torch.tensor([[1.0, 2.0, 100.0], [100.0, 4.0, 100.0]])  # masked positions must not count
    assert ctx.token_mean(values).item() == pytest.approx(7.0 / 10)
    assert ctx.token_mean(torch.ones(1, 3), "retain").item() == pytest.approx(3.0 / 6)
    assert ctx.row_mean(torch.tensor([1.0, 3.0])).item() == pytest.approx(4.0 / 4)
    assert ctx.row_mean(torch.tensor([1.0, 3.0]), "retain").item() == pytest.approx(4.0 / 2)


@dataclass
class DoubledArguments:
    r"""
    Parameters:
        ascent_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the ascent.
    """

    ascent_weight: float = field(default=1.0, metadata={"help": "Weight of the ascent."})


@dataclass
class DoubledConfig(DoubledArguments, UnlearningConfig):
    pass


def register_doubled():
    @register_method
    class Doubled(UnlearningMethod):
        name = "doubled-ga"
        description = "ascent_weight * minus the forget NLL, logged as 'ascent'"
        paper = "none: a test method"
        arguments = DoubledArguments

        def loss(self, ctx):
            ascent = ctx.token_mean(ctx.forget_logp)  # = -forget NLL, normalised over the whole step
            ctx.log("ascent", ascent)
            return self.args.ascent_weight * ascent

    return Doubled


def test_a_method_defined_outside_the_package_trains_with_its_own_hyperparameter(
    registry_guard, tiny_model, tokenizer, rows, tmp_path
):
    register_doubled()
    forget, _ = rows
    with pytest.raises(ValueError, match=r"has hyperparameters \['ascent_weight'\] that UnlearningConfig lacks"):
        make_config(tmp_path, method="doubled-ga")
    assert "--ascent_weight" in HfArgumentParser(DoubledConfig).format_help()
    model = lora(tiny_model)
    config = make_config(tmp_path, DoubledConfig, method="doubled-ga", ascent_weight=2.5)
    assert not config.uses_retain and not config.needs_reference
    model.eval()
    expected = -2.5 * -torch.cat(
        [d.gather(-1, t[:, None])[:, 0] for d, t in (answer_distributions(model, tokenizer, r) for r in forget)]
    ).mean()
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_list(forget),
                                processing_class=tokenizer)
    assert trainer.train_dataset.retain is None  # the method reads no retain term: the retain set is not tokenised
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert logged["ascent"] == pytest.approx(-logged["forget_nll"], rel=1e-6)
    record = training_record(trainer)
    assert record["hyperparameters"]["ascent_weight"] == 2.5 and record["method"] == "doubled-ga"
    assert "| ascent_weight | 2.5 |" in model_card(record) and "none: a test method" in model_card(record)


def test_step_counts_reach_compute_loss_without_a_global_key(tiny_model, tokenizer, rows, tmp_path):
    seen = []

    class Spy(UnlearningTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append(num_items_in_batch)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    forget, retain = rows
    config = make_config(tmp_path, method="gd", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    Spy(model=lora(tiny_model), args=config, forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain), processing_class=tokenizer).train()
    assert len(seen) == 2 and seen[0] is seen[1] and isinstance(seen[0], StepCounts)
    answer_tokens = sum(len(tokenizer(r["output"], add_special_tokens=False)["input_ids"]) + 1 for r in forget)
    assert seen[0].forget_tokens.item() == answer_tokens
    assert (seen[0].forget_rows.item(), seen[0].retain_rows.item()) == (4, 4)


def test_record_hyperparameters_come_from_the_method(tmp_path):
    gd = training_record(args=make_config(tmp_path, method="gd", retain_kl_weight=0.5))["hyperparameters"]
    assert gd["method"] == "gd" and gd["retain_nll_weight"] == 1.0
    assert "retain_kl_weight" not in gd and "beta" not in gd and "reference" not in gd  # gd reads none of them
    rmu = training_record(args=make_config(tmp_path, method="rmu", rmu_layer=2))["hyperparameters"]
    assert {k: rmu[k] for k in ("rmu_layer", "rmu_alpha", "rmu_steering_coeff")} == {
        "rmu_layer": 2, "rmu_alpha": 1200.0, "rmu_steering_coeff": None}
    assert "retain_nll_weight" not in rmu and rmu["reference"] == "auto"
    json.dumps(rmu)
