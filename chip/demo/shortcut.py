"""Does the visual term learn the image's content, or only to recognise noise? (issue 16, item 4)

    from chip.demo.shortcut import shortcut_analysis
    shortcut_analysis(base_path, {"dpo+visual": run_dir, ...}, WorldConfig(), scenes=200)

The visual margin h_vis = R(y_w | v) − R(y_w | ṽ) (docs/method.md) can grow in two ways: the policy
learns that the caption fits *this* image better than its noised copy (content), or it learns to
give any caption a lower likelihood under any noisy-looking image (a shortcut: diffusion noise is
easy to spot). Two measurements tell them apart:

- **margin without objects**: h_vis of each trained model, with the base as reference, on held-out
  scenes and on the same scenes with their objects removed (background and pixel noise only,
  caption unchanged). Content learning gives a margin only where the caption's objects are
  visible; the shortcut gives the same margin on both.
- **noise probe**: a logistic regression on the base model's pooled image features, trained on
  half of the scenes (clean vs noised) and tested on the other half. High accuracy means the
  noised image is trivially recognisable to the model before any preference training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip.corruption import NOISE_STEP, diffusion_noise, example_generator
from chip.demo.tiny_vlm import PromptEncoder, pixel_values
from chip.demo.world import CAPTION_PROMPT, Scene, WorldConfig, blank_image, make_scenes


def noised(pixels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The diffusion-noised copy of each image of ``pixels`` (B, 3, H, W), deterministic per row."""
    return torch.stack(
        [diffusion_noise(p, NOISE_STEP, example_generator(seed, i)) for i, p in enumerate(pixels)]
    )


@torch.no_grad()
def caption_logps(model: Any, batch: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """Σ_t log π(y_t | v, x, y_<t) of each row's answer tokens under the images ``pixels``; (B,)."""
    logits = model(**{**batch, "pixel_values": pixels}).logits[:, :-1].float()  # (B, T-1, V)
    labels = batch["labels"][:, 1:]  # (B, T-1)
    mask = labels != -100
    token_logps = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1)  # (B,)


def visual_margins(
    policy: Any, reference: Any, batch: dict[str, torch.Tensor], clean: torch.Tensor
) -> torch.Tensor:
    """h_vis = [log π(y|v) − log π_ref(y|v)] − [log π(y|ṽ) − log π_ref(y|ṽ)] per row; (B,)."""
    noisy = noised(clean)
    real = caption_logps(policy, batch, clean) - caption_logps(reference, batch, clean)
    corrupt = caption_logps(policy, batch, noisy) - caption_logps(reference, batch, noisy)
    return real - corrupt


@torch.no_grad()
def noise_probe_accuracy(model: Any, clean: torch.Tensor, steps: int = 200) -> float:
    """Held-out accuracy of a logistic regression telling clean from noised images apart.

    Features: the model's projected image tokens, averaged over the image. Train on the first half
    of the images (each clean and noised), test on the second half.
    """
    noisy = noised(clean, seed=1)
    features = [model.get_image_features(pixel_values=p) for p in (clean, noisy)]
    features = [f.pooler_output if hasattr(f, "pooler_output") else f for f in features]
    pooled = [torch.stack([x.reshape(-1, x.shape[-1]).mean(0) for x in f]) for f in features]  # (B, D) each
    half = clean.shape[0] // 2
    x_train = torch.cat([pooled[0][:half], pooled[1][:half]])  # (2·half, D)
    x_test = torch.cat([pooled[0][half:], pooled[1][half:]])
    y_train = torch.cat([torch.zeros(half), torch.ones(half)])
    y_test = torch.cat([torch.zeros(len(pooled[0]) - half), torch.ones(len(pooled[1]) - half)])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    weight = torch.zeros(x_train.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x_train @ weight + bias, y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    predicted = (x_test @ weight + bias) > 0
    return float((predicted == y_test.bool()).float().mean())


def _encode(
    processor: Any, scenes: list[Scene], images: list[Image.Image], size: int
) -> dict[str, torch.Tensor]:
    return PromptEncoder(processor, size).batch(
        images, [CAPTION_PROMPT] * len(scenes), [s.caption for s in scenes]
    )


def shortcut_analysis(
    base_path: Path, runs: dict[str, Path], world: WorldConfig, scenes: int
) -> dict[str, Any]:
    """Mean h_vis with and without the scenes' objects per trained model, and the noise probe."""
    held_out = make_scenes(world, "analysis", scenes)
    reference = AutoModelForImageTextToText.from_pretrained(base_path).eval()
    processor = AutoProcessor.from_pretrained(base_path)
    blanks = [blank_image(s.seed, world) for s in held_out]
    batch = _encode(processor, held_out, [s.image for s in held_out], world.image_size)
    clean = batch.pop("pixel_values")  # (B, 3, H, W)
    empty = pixel_values(blanks)  # (B, 3, H, W): the same scenes, objects removed
    out: dict[str, Any] = {"scenes": scenes, "noise_step": NOISE_STEP, "margins": {}}
    for name, path in runs.items():
        policy = AutoModelForImageTextToText.from_pretrained(path).eval()
        with_objects = visual_margins(policy, reference, batch, clean)
        without = visual_margins(policy, reference, batch, empty)
        out["margins"][name] = {
            "h_vis_with_objects": float(with_objects.mean()),
            "h_vis_objects_removed": float(without.mean()),
            "share_positive_with_objects": float((with_objects > 0).float().mean()),
            "share_positive_objects_removed": float((without > 0).float().mean()),
        }
    out["noise_probe_accuracy"] = noise_probe_accuracy(reference, clean)
    return out


def shortcut_table(shortcut: dict[str, Any]) -> str:
    lines = [
        "| model | mean h_vis, objects present (nats) | mean h_vis, objects removed | h_vis > 0, present | h_vis > 0, removed |",
        "|---|---|---|---|---|",
    ]
    for name, m in shortcut["margins"].items():
        lines.append(
            f"| {name} | {m['h_vis_with_objects']:.2f} | {m['h_vis_objects_removed']:.2f} | "
            f"{100 * m['share_positive_with_objects']:.1f}% | {100 * m['share_positive_objects_removed']:.1f}% |"
        )
    return "\n".join(lines)


def shortcut_section(shortcut: dict[str, Any] | None, seed: int) -> str:
    """The report's section on the noise-shortcut hypothesis (empty when the analysis did not run)."""
    if not shortcut:
        return ""
    return f"""## Is the visual margin a noise detector? (seed {seed}, {shortcut["scenes"]} held-out scenes)

h_vis = [log π(y|v) − log π_ref(y|v)] − [log π(y|ṽ) − log π_ref(y|ṽ)] of the faithful caption, reference =
the base, ṽ = diffusion noise at step {shortcut["noise_step"]}; "objects removed" = the same scenes with background and
pixel noise only, caption unchanged. A margin that is as large without the objects comes from recognising the noise,
not from the caption's content.

{shortcut_table(shortcut)}

A logistic probe on the base model's pooled image features tells clean from noised images apart with held-out
accuracy {100 * shortcut["noise_probe_accuracy"]:.1f}%.
"""
