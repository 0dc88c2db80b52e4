"""The demo report's first section: every term and symbol it uses, defined before it is used."""

from __future__ import annotations

from typing import Any

from chip.demo.cost import ON_POLICY, pairs_of
from chip.demo.methods import VARIANTS


def glossary(results: dict[str, Any]) -> str:
    """What the run did and what each name, metric and symbol of the report means.

    Entries about parts a run did not have (variants, on-policy pairs, the lr grid, the
    visual-margin analysis) are left out, so a quick run's report holds nothing it cannot show.
    """
    config, names = results["config"], list(results["methods"])
    several = len(config["seeds"]) > 1
    lines = [
        "## How to read this report",
        "",
        "The demo trains a tiny vision-language model, the **base**, on a synthetic world of coloured "
        "shapes (images with a caption and questions each), then fine-tunes copies of it on the same "
        f"{config['num_pairs']} **preference pairs** (a faithful caption, *chosen*, and one that names "
        "an absent object, *rejected*) with different objectives, and measures every copy on held-out "
        f"**test scenes** ({config['test_scenes']}) that no training or choice saw.",
        "",
        "- **dpo**: direct preference optimisation: raise the chosen caption's likelihood relative to "
        "the rejected one's, both measured against the frozen base. **chip** (CHiP) adds three terms to "
        "it; **dpo+segment**, **dpo+token**, **dpo+visual** add one each: *segment* weighting (λ: the "
        "words where chosen and rejected differ weigh 1 + λ), a *token*-level term (α: TDPO's "
        "per-token divergence), a *visual* term (μ: the chosen caption must fit the real image better "
        "than a corrupted copy). β = inverse temperature of the preference sigmoid; η = weight of an "
        "extra log-likelihood term on the chosen caption (the same for every method).",
        "- **h_text**: the text margin, how much more the trained model prefers chosen over rejected "
        "than the base does (log-likelihood ratios, nats, whose changed-segment tokens weigh 1 + λ, so "
        "methods with different λ have different margins); **h_vis**: the visual margin, how much more "
        "it prefers the chosen caption under the real image than under the corrupted one. The training "
        "curves show β·h_text and β·h_vis.",
    ]
    rivals = {
        "mdpo": "- **mdpo**: mDPO's objective (its conditional image preference and a reward anchor) as "
        "the `--method mdpo` preset.",
        "chip-anchored": "- **chip-anchored**: CHiP with image-anchored token weights (`--method "
        "chip-anchored`): each token weighs by how much the real image raises its likelihood over "
        "the corrupted one.",
        "chip-multi": "- **chip-multi**: CHiP on the same pairs with up to three rejected captions per "
        "row, one per kind of error, the first being the one every other method sees (`--method "
        "chip-multi`): each pairwise term is averaged over them.",
    }
    lines += [text for name, text in rivals.items() if any(pairs_of(n)[0] == name for n in names)]
    if any(pairs_of(n)[0] in VARIANTS for n in names):
        lines.append(
            "- **Variants** of the visual term: `-separate` = one sigmoid per preference instead of one "
            "joint sigmoid; `chip-<kind>` = another image corruption than diffusion noise; `-clip20` = "
            "gradient clipping at norm 20 (the authors') instead of 1."
        )
    if any(pairs_of(n)[1] == ON_POLICY for n in names):
        lines.append(
            "- **@onpolicy**: the same method trained on pairs drawn from the base's *own* captions "
            "(`chip pairs` with the world as annotator) instead of the built-in, hand-made pairs."
        )
    lines += [
        "- **greedy** captions take the most likely word at every step (`chip eval`'s default); "
        "**sampled** captions draw each word at temperature T = 1 (the model's whole distribution).",
        "- **CHAIR_i**: mentions of objects absent from the scene / all object mentions (lower is "
        "better). **CHAIR_s**: captions naming at least one absent object / all captions. **recall**: "
        "objects of the scene that the caption names / objects in the scene (higher is better). Object "
        "words are the world's shape names, synonyms folded.",
        "- **attribute accuracy**: exact answers to questions about objects that are there — *colour* "
        '("what colour is the star ?"), *position* (its grid cell, "top left"), *size* ("large or '
        'small ?": shapes are large, their small partners small) and *count* ("how many large objects '
        '?") — what a model should keep knowing while it learns not to hallucinate (higher is better).',
        '- **POPE acc**: accuracy on yes/no questions "is there a ... ?"; each split holds every '
        "question about a present object plus negatives about a *random* absent shape, the most "
        "*popular* absent shape, or the absent usual partner of a present shape (*adversarial*). "
        "**yes ratio**: share answered yes.",
        "- **Δ [95% CI]**: a difference in percentage points with its 95% paired bootstrap interval: "
        "replicates resample the test scenes (the same scenes for both sides, since both answered them)"
        + (" and each method's training seeds" if several else "")
        + ". **not distinguishable** (n.d.): the interval spans 0. Every verdict in words follows "
        "such an interval, never a spread.",
    ]
    if config["val_scenes"] and len(config["lr_grid"]) > 1:
        lines.append(
            f"- **lr**: the learning rate each method chose from the grid on {config['val_scenes']} "
            "validation scenes (a split of its own); variants reuse their method's."
        )
    lines.append(
        "- **the paper**: the CHiP paper (Fu et al., ICLR 2025) reports CHiP's Object HalBench "
        "hallucination rate 52.7% (Muffin) and 55.5% (LLaVA) lower than DPO's, relative: −52.7% / "
        "−55.5% in this report's sign convention."
    )
    return "\n".join(lines)
