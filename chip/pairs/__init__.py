"""`chip pairs`: on-policy preference pairs — the model's own samples, judged, hallucinations marked.

    from chip.pairs import PairingRules, SamplingSettings, folder_items, coco_annotator, make_pairs
    items, skipped = folder_items("coco/val2014", DEFAULT_PROMPTS, seed=0, limit=500)
    report = make_pairs("runs/base", items, coco_annotator("coco/annotations", items, "official"),
                        "data/round1", SamplingSettings(samples=8), PairingRules())

Modules: `sources` (prompts and images), `sampling` (seeded, resumable sampling), `mentions` and
`annotators` (hallucinations against true objects), `judging` (a served model checks claims),
`pairing` (the rules), `output` (the training folder), `report`, `pipeline` (`make_pairs`), `cli`.
"""

from chip.pairs.annotators import Annotation, Annotator, TruthAnnotator, coco_annotator, objects_annotator
from chip.pairs.pairing import PairingRules
from chip.pairs.pipeline import make_pairs
from chip.pairs.sampling import SamplingSettings
from chip.pairs.sources import DEFAULT_PROMPTS, PromptItem, dataset_items, folder_items

__all__ = [
    "DEFAULT_PROMPTS",
    "Annotation",
    "Annotator",
    "PairingRules",
    "PromptItem",
    "SamplingSettings",
    "TruthAnnotator",
    "coco_annotator",
    "dataset_items",
    "folder_items",
    "make_pairs",
    "objects_annotator",
]
