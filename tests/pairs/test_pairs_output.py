"""`chip pairs --rejected_per_row N`: pairs sharing a prompt and chosen sample written as one row
with several rejected responses, which `chip train`'s loader reads back."""

from __future__ import annotations

import json

from PIL import Image

from chip.data import ImageRef, load_preference_rows
from chip.pairs.annotators import Annotation
from chip.pairs.output import PAIRS_FILE, write_pairs
from chip.pairs.pairing import Candidate, Pair
from chip.pairs.sources import PromptItem


def candidate(sample: int, hallucinated: tuple[str, ...]) -> Candidate:
    text = f"sample {sample} sees a cat" + "".join(f" and a {word}" for word in hallucinated)
    spans = tuple((text.index(word), text.index(word) + len(word)) for word in hallucinated)
    return Candidate(sample, text, Annotation(len(hallucinated), 1, spans, hallucinated))


def test_pairs_sharing_a_chosen_sample_become_one_row(tmp_path):
    """Prompt a: chosen 0 against rejected 1, 2, 3 (N = 2: rows [1, 2] and [3]); prompt b: one pair."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    items = {
        name: PromptItem(name, "Describe.", (ImageRef(path=tmp_path / "a.png"),), (f"{name}.png",))
        for name in ("a", "b")
    }
    clean = candidate(0, ())
    pairs = [Pair("a", clean, candidate(k, ("dog",) * k)) for k in (1, 2, 3)] + [
        Pair("b", clean, candidate(5, ("bird",)))
    ]
    out = tmp_path / "out"
    rows = write_pairs(out, pairs, items, rejected_per_row=2)
    assert [row["id"] for row in rows] == ["a#pair0", "a#pair1", "b#pair0"]
    assert rows[0]["rejected_sample"] == [1, 2] and rows[0]["rejected_hallucinations"] == [1, 2]
    dog = pairs[0].rejected.text.index("dog")
    assert rows[0]["rejected_segments"][0] == [[dog, dog + 3]]
    # the chosen response's spans against each rejected one: "sample 0" vs "sample 1" / "sample 2"
    # changes the digit at 7, and "and a dog" is inserted after "cat" (16-19), which marks "cat"
    assert rows[0]["chosen_segments"] == [[[7, 8], [16, 19]], [[7, 8], [16, 19]]]
    assert rows[1]["rejected_sample"] == 3 and rows[1]["rejected_segments"]  # a single pair keeps its spans
    assert json.loads((out / PAIRS_FILE).read_text().splitlines()[0])["rejected"] == [
        pairs[0].rejected.text,
        pairs[1].rejected.text,
    ]

    examples, report = load_preference_rows(out / PAIRS_FILE)
    assert report.ok
    assert examples[0].more_rejected == (pairs[1].rejected.text,)
    assert examples[1].more_rejected == ()
