"""Stage 1 of the base model: pretrain the CLIP vision tower to recognise the objects in each cell.

Real LLaVAs start from a pretrained CLIP; training the tower from scratch through captions alone
is slow, because the only signal reaching it is a caption loss routed through the language
model's attention (a from-scratch tower at 600 caption steps still named barely a third of the
objects; see docs/demo-world.md). So the tower first learns a direct task: for each grid cell,
which classes it holds (multi-label: the anchor and, when drawn, its small partner). The linear
head is thrown away afterwards; only the tower's features carry over into captioning.

Partners are labelled too, so the evidence the base model later under-uses is present in the
features, only weak: ``VisionReport`` shows how well the tower alone detects them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import CLIPVisionModel

from chip.demo.tiny_vlm import pixel_values
from chip.demo.world import CLASSES, PARTNER, WorldConfig, make_scenes


@dataclass(frozen=True)
class VisionReport:
    """Held-out per-cell detection by the pretrained tower (threshold 0.5)."""

    anchor_accuracy: float  # anchor cells whose anchor class is detected
    partner_recall: float  # drawn partners detected
    partner_false_alarm: float  # cells with a paired anchor but no partner, where the partner is "detected"
    empty_cell_clean: float  # empty cells where nothing is detected


def cell_targets(
    world: WorldConfig, split: str, count: int, start: int
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Pixels ``(B, 3, H, W)`` and per-cell multi-hot class targets ``(B, cells, classes)``."""
    scenes = make_scenes(world, split, count, start)
    targets = torch.zeros((count, world.grid**2, len(CLASSES)))  # (B, C, K)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            targets[i, obj.cell, CLASSES.index(obj.shape)] = 1.0
    return pixel_values([s.image for s in scenes]), targets, scenes


class CellClassifier(torch.nn.Module):
    """The vision tower plus a linear head on each cell's mean patch feature."""

    def __init__(self, tower: CLIPVisionModel, world: WorldConfig, patch_size: int) -> None:
        super().__init__()
        self.tower = tower
        self.grid = world.grid
        self.per_cell = world.image_size // world.grid // patch_size  # patches per cell side
        self.head = torch.nn.Linear(tower.config.hidden_size, len(CLASSES))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.tower(pixel_values=pixels).last_hidden_state[:, 1:]  # (B, P, D), CLS dropped
        b, _, d = features.shape
        g, p = self.grid, self.per_cell
        cells = (
            features.view(b, g, p, g, p, d).permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p, d)
        )  # (B, C, p², D)
        return self.head(cells.mean(2))  # (B, C, K)


def pretrain_vision(
    tower: CLIPVisionModel,
    world: WorldConfig,
    patch_size: int,
    steps: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    on_step: Callable[[float], None] | None = None,
) -> VisionReport:
    """Train ``tower`` in place on per-cell object detection; report held-out detection rates.

    ``on_step`` (if given) is called with the loss after every step, for a progress bar.
    """
    classifier = CellClassifier(tower, world, patch_size).to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr)
    classifier.train()
    for step in range(steps):
        pixels, targets, _ = cell_targets(world, "vision", batch_size, step * batch_size)
        logits = classifier(pixels.to(device))  # (B, C, K)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(loss.item())
    return _report(classifier, world, device)


@torch.no_grad()
def _report(classifier: CellClassifier, world: WorldConfig, device: torch.device) -> VisionReport:
    classifier.eval()
    pixels, _, scenes = cell_targets(world, "vision-eval", 256, 0)
    detected = (classifier(pixels.to(device)) > 0).cpu()  # (B, C, K)
    anchors = partners = alarms = empties = 0
    n_anchor = n_partner = n_alarm = n_empty = 0
    for i, scene in enumerate(scenes):
        occupied = set()
        for obj in scene.objects:
            hit = bool(detected[i, obj.cell, CLASSES.index(obj.shape)])
            occupied.add(obj.cell)
            if obj.partner_of is None:
                anchors, n_anchor = anchors + hit, n_anchor + 1
                partner = PARTNER.get(obj.shape)
                has_partner = any(o.partner_of is not None and o.cell == obj.cell for o in scene.objects)
                if partner and not has_partner:
                    alarms += bool(detected[i, obj.cell, CLASSES.index(partner)])
                    n_alarm += 1
            else:
                partners, n_partner = partners + hit, n_partner + 1
        for cell in set(range(world.grid**2)) - occupied:
            empties, n_empty = empties + (not detected[i, cell].any()), n_empty + 1
    classifier.train()
    return VisionReport(
        anchor_accuracy=anchors / max(n_anchor, 1),
        partner_recall=partners / max(n_partner, 1),
        partner_false_alarm=alarms / max(n_alarm, 1),
        empty_cell_clean=empties / max(n_empty, 1),
    )
