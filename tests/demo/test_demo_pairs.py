"""Preference pairs from the world: API.md rows whose spans point at the hallucinated words."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from chip.data.cli import check_main
from chip.demo.pairs import PairsConfig, changed_spans, write_preference_pairs
from chip.demo.world import WORLD_VOCABULARY, WorldConfig, make_scene, scene_seed
from chip.evaluation.chair import extract_mentions


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_preference_pairs(WorldConfig(), tmp_path_factory.mktemp("pairs"), count=120)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_have_the_api_fields_and_images(pairs_file: Path) -> None:
    rows = _rows(pairs_file)
    assert len(rows) == 120 and len({r["id"] for r in rows}) == 120
    for row in rows:
        assert set(row) >= {
            "id",
            "images",
            "prompt",
            "chosen",
            "rejected",
            "chosen_segments",
            "rejected_segments",
        }
        assert (pairs_file.parent / row["images"][0]).is_file()


def test_chip_data_check_accepts_the_file(pairs_file: Path) -> None:
    assert check_main([str(pairs_file)]) == 0


def test_chosen_is_faithful_and_rejected_hallucinates(pairs_file: Path) -> None:
    kinds: Counter[str] = Counter()
    for row in _rows(pairs_file):
        scene = make_scene(scene_seed(0, "pairs", int(row["id"].split("-")[1])), WorldConfig())
        assert row["chosen"] == scene.caption
        hallucinated = set(extract_mentions(row["rejected"], WORLD_VOCABULARY)) - scene.classes
        assert len(hallucinated) == 1, row
        kinds[row["kind"]] += 1
    assert set(kinds) == {"partner", "absent", "swap"}


def test_spans_point_at_the_changed_words(pairs_file: Path) -> None:
    """Swapping the chosen span's text for the rejected span's gives the rejected caption, and the
    rejected span holds the hallucinated object word."""
    for row in _rows(pairs_file):
        chosen, rejected = row["chosen"], row["rejected"]
        [(cs, ce)], [(rs, re)] = row["chosen_segments"], row["rejected_segments"]
        assert chosen[:cs] + rejected[rs:re] + chosen[ce:] == rejected
        assert 0 < ce - cs and 0 < re - rs
        for text, start, end in ((chosen, cs, ce), (rejected, rs, re)):  # whole words
            assert (start == 0 or text[start - 1] == " ") and (end == len(text) or text[end] == " ")
        scene_classes = set(extract_mentions(chosen, WORLD_VOCABULARY))
        assert set(extract_mentions(rejected[rs:re], WORLD_VOCABULARY)) - scene_classes


def test_changed_spans_by_hand() -> None:
    chosen = "a red star and a blue box ."
    assert changed_spans(chosen, "a red star with a moon and a blue box .", single_edit=True) == (
        [[6, 10]],
        [[6, 22]],
    )
    assert changed_spans(chosen, "a red heart and a blue box .", single_edit=True) == ([[6, 10]], [[6, 11]])
    assert changed_spans(chosen, chosen) == ([], [])


def test_pairs_are_deterministic(tmp_path: Path) -> None:
    a = write_preference_pairs(WorldConfig(), tmp_path / "a", count=10, config=PairsConfig(seed=3))
    b = write_preference_pairs(WorldConfig(), tmp_path / "b", count=10, config=PairsConfig(seed=3))
    assert a.read_text() == b.read_text()


def test_rows_with_several_rejected_captions(pairs_file: Path, tmp_path: Path) -> None:
    """With rejected_per_pair 3 each row keeps the single-rejected row's caption first, then one
    caption per further kind that applies; every caption has one hallucinated object, and each
    pair's spans turn chosen into that rejected caption."""
    path = write_preference_pairs(WorldConfig(), tmp_path, count=120, config=PairsConfig(rejected_per_pair=3))
    sizes: Counter[int] = Counter()
    for single, row in zip(_rows(pairs_file), _rows(path)):
        rejected = row["rejected"]
        assert rejected[0] == single["rejected"] and row["kind"][0] == single["kind"]
        assert row["chosen_segments"][0] == single["chosen_segments"]
        assert len(set(row["kind"])) == len(row["kind"]) == len(rejected) == len(set(rejected))
        scene = make_scene(scene_seed(0, "pairs", int(row["id"].split("-")[1])), WorldConfig())
        for caption, [(cs, ce)], [(rs, re)] in zip(
            rejected, row["chosen_segments"], row["rejected_segments"]
        ):
            assert len(set(extract_mentions(caption, WORLD_VOCABULARY)) - scene.classes) == 1
            assert row["chosen"][:cs] + caption[rs:re] + row["chosen"][ce:] == caption
        sizes[len(rejected)] += 1
    assert sizes[3] > 0 and sizes[2] > 0 and set(sizes) <= {1, 2, 3}
    assert check_main([str(path)]) == 0
