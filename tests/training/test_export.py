"""`chip export --merge`: a LoRA run becomes a standalone model with the adapter's outputs."""

from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip.cli import main as chip_main
from tests.train_helpers import train, write_pairs


def test_merged_model_loads_alone_and_scores_like_the_adapter(tiny_model, tmp_path):
    from peft import PeftModel

    base_dir = tiny_model("llava")
    adapter_dir = tmp_path / "lora"
    train(base_dir, write_pairs(tmp_path / "data", n=4), adapter_dir, max_steps=2, use_peft=True)
    merged_dir = tmp_path / "merged"
    assert chip_main(["export", str(adapter_dir), "--merge", "--output_dir", str(merged_dir)]) == 0
    assert not (merged_dir / "adapter_config.json").exists()
    card = (merged_dir / "README.md").read_text()  # the run's model card, carried over
    assert "library_name: transformers" in card and "training pairs: 4" in card and "## Export" in card

    processor = AutoProcessor.from_pretrained(merged_dir)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=Image.new("RGB", (32, 32), (200, 30, 30)), text=text, return_tensors="pt")
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(base_dir), adapter_dir
    ).eval()
    base = AutoModelForImageTextToText.from_pretrained(base_dir).eval()
    with torch.no_grad():
        merged_logits, adapted_logits = merged(**inputs).logits, adapted(**inputs).logits
        base_logits = base(**inputs).logits
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)  # the adapter's training is in it


def test_export_without_an_adapter_is_one_line(tiny_model, tmp_path, capsys):
    code = chip_main(["export", str(tiny_model("llava")), "--merge", "--output_dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "holds no LoRA adapter (no adapter_config.json)" in err
