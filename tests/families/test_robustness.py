"""A family chip does not know, or a layout that fails inside a model, never ends in a traceback.

- a model type missing from the quirks table is scored through its own forward, with one warning
  naming what was turned off, and gives the plain forward's numbers;
- a faster layout that raises inside the model on the first batch is replaced by the plain one
  for that model (one warning), while a failure after the layout worked is raised as it is;
- a model whose own forward cannot run (Llama-4 in transformers 5.24) fails with one line naming
  the model, from the library and from `chip train`;
- freezing and LoRA targets follow the quirks table's module names in every family.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForImageTextToText
from transformers.utils import is_torchvision_available

from chip.cli import main as chip_main
from chip.modeling import QUIRKS, LayoutSettings, ModelError, ResponseScorer, VLMAdapter, response_logps
from chip.modeling import plans as plans_module
from chip.modeling.quirks import DEFAULT_QUIRKS, quirks_for
from chip.modeling.routes import choose_route
from chip.testing import ALL_FAMILIES
from chip.training.models import freeze_vision_tower, is_projector_parameter, language_linear_modules
from tests.conftest import family_params, random_image
from tests.train_helpers import train_args, write_pairs

PLAIN = LayoutSettings(route="full", share_prefix=False, encode_images_once=False)  # the plain forward


def _pair_batch(model_dir):
    adapter = VLMAdapter.from_pretrained(model_dir)
    prompts = [adapter.encode_prompt([random_image(i, 32, 32)], "Describe the image.") for i in range(2)]
    return adapter.collate_pairs(
        [(p, adapter.encode_response("A red star."), adapter.encode_response("Blue.")) for p in prompts]
    )


def test_an_unknown_family_takes_its_own_forward_with_one_warning(tiny_model, monkeypatch, caplog):
    model_dir = tiny_model("llava")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    batch = _pair_batch(model_dir)
    with torch.no_grad():
        expected = response_logps(model, batch, settings=PLAIN)
    monkeypatch.delitem(QUIRKS, "llava")
    assert quirks_for(model.config) is DEFAULT_QUIRKS
    fresh = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    assert choose_route(fresh) == "keep"
    with caplog.at_level(logging.WARNING, logger="chip.modeling.logps"), torch.no_grad():
        scorer = ResponseScorer()  # what a trainer holds for a run
        first = scorer(fresh, batch)
        second = scorer(fresh, batch)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "(model type 'llava') is not in chip's quirks table" in warnings[0]
    assert "prefix sharing, images encoded once and the trunk route are off" in warnings[0]
    assert_close(first.logps, expected.logps, atol=2e-6, rtol=0)
    assert_close(second.logps, expected.logps, atol=2e-6, rtol=0)


def test_a_layout_failing_on_the_first_batch_falls_back_once(tiny_model, monkeypatch, caplog):
    model_dir = tiny_model("llava")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    batch = _pair_batch(model_dir)
    with torch.no_grad():
        expected = response_logps(model, batch, settings=PLAIN)
    calls = []

    def broken(core, images):
        calls.append(1)
        raise AttributeError("'tuple' object has no attribute 'to'")

    monkeypatch.setattr(plans_module, "shared_image_inputs", broken)
    fresh = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    with caplog.at_level(logging.WARNING, logger="chip.modeling.logps"), torch.no_grad():
        scorer = ResponseScorer(LayoutSettings(share_prefix=False))
        first = scorer(fresh, batch)
        tried = len(calls)  # packed, then padded: both encode images once
        second = scorer(fresh, batch)
    assert tried == 2 and len(calls) == tried, "the failed layouts are not tried again"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "with images encoded once and rows packed without padding failed on the first batch" in warning
    assert "'tuple' object" in warning
    assert_close(first.logps, expected.logps, atol=2e-6, rtol=0)
    assert_close(second.logps, expected.logps, atol=2e-6, rtol=0)


def test_a_failure_after_the_layout_worked_is_not_masked(tiny_model, monkeypatch):
    model_dir = tiny_model("llava")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    batch = _pair_batch(model_dir)
    with torch.no_grad():
        scorer = ResponseScorer()
        scorer(model, batch)
        monkeypatch.setattr(plans_module, "pair_token_index", _raise_runtime_error)
        with pytest.raises(RuntimeError, match="a real bug"):
            scorer(model, batch)


def _raise_runtime_error(*args, **kwargs):
    raise RuntimeError("a real bug")


needs_torchvision = pytest.mark.skipif(
    not is_torchvision_available(), reason="the stock Llama-4 processor needs torchvision"
)


@needs_torchvision
def test_a_model_whose_own_forward_fails_is_one_line(tiny_model, tmp_path, capsys):
    """Llama-4's forward reads a field its language model's output lacks (transformers 5.24)."""
    model_dir = tiny_model("llama4")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    with pytest.raises(ModelError, match=r"^Llama4ForConditionalGeneration \(llama4\) cannot score a batch"):
        with torch.no_grad():
            response_logps(model, _pair_batch(model_dir))

    data = write_pairs(tmp_path / "data", n=2)
    argv = train_args(model_dir, data, tmp_path / "out", max_steps=1, per_device_train_batch_size=2)
    assert chip_main(["train", *argv]) != 0
    err = capsys.readouterr().err
    chip_lines = [line for line in err.splitlines() if line.startswith("chip:")]
    assert len(chip_lines) == 1, err
    assert chip_lines[0].startswith("chip: error: Llama4ForConditionalGeneration (llama4) cannot score")
    assert "Traceback" not in err


@pytest.mark.parametrize("family", family_params(ALL_FAMILIES))
def test_freezing_and_lora_targets_follow_the_quirks_table(tiny_model, family):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model(family))
    quirks = quirks_for(model.config)
    targets = language_linear_modules(model)
    assert targets, "no LoRA targets"
    vision = [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in quirks.vision_modules]
    assert vision, f"no module named {quirks.vision_modules}"
    assert not [
        t for t in targets if any(t.startswith(v + ".") for v in vision) or is_projector_parameter(t, quirks)
    ]
    assert any(t.endswith(("q_proj", "qkv_proj", "query_key_value", "in_proj_qkvz")) for t in targets), (
        targets
    )
    frozen = freeze_vision_tower(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert frozen > 0
    assert not [
        n
        for n in trainable
        if any(n.startswith(v + ".") for v in vision) and not is_projector_parameter(n, quirks)
    ]
    assert any(is_projector_parameter(n, quirks) for n in trainable), "the projector must stay trainable"


def test_quirk_rows_are_frozen_and_defaults_are_plain():
    assert not DEFAULT_QUIRKS.known and DEFAULT_QUIRKS.trunk is None
    assert not DEFAULT_QUIRKS.prefix_sharing and not DEFAULT_QUIRKS.images_once
    with pytest.raises(dataclasses.FrozenInstanceError):
        QUIRKS["llava"].prefix_sharing = False  # type: ignore[misc]


def test_a_processor_missing_a_package_is_one_line(tiny_model, monkeypatch):
    from chip.modeling import load_processor, processors

    def missing(*args, **kwargs):
        raise ImportError(
            "SmolVLMProcessor requires the num2words library but it was not found.\nInstall it."
        )

    monkeypatch.setattr(processors.AutoProcessor, "from_pretrained", missing)
    with pytest.raises(
        ModelError, match=r"the llava processor cannot be loaded here: .*num2words.* Install it\.$"
    ):
        load_processor(tiny_model("llava"))
