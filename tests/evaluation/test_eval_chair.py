"""CHAIR / Object HalBench: mention extraction rules, hand-worked metrics, COCO truth loading."""

from __future__ import annotations

import pytest

from chip.errors import ConfigError, DataError
from chip.evaluation.chair import (
    COCO_VOCABULARY,
    ObjectVocabulary,
    chair_scores,
    extract_mentions,
    load_coco_truth,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man and a woman.", ["person", "person"]),  # repeats kept
        ("Two hot dogs on a plate.", ["hot dog"]),  # phrase wins over "dog"
        ("A teddy bear.", ["teddy bear"]),
        ("Traffic-lights and cell phones.", ["traffic light", "cell phone"]),
        ("A passenger jet.", ["airplane"]),  # "passenger" is not a person here
        ("A baby elephant next to an adult giraffe.", ["elephant", "giraffe"]),
        ("Baby ducks swim.", ["bird"]),  # the rule covers every surface form of an animal class
        ("The baby smiles.", ["person"]),  # without an animal, "baby" is a person
        ("A toilet seat.", ["toilet"]),
        ("A seat next to the toilet.", ["toilet"]),  # "seat" dropped when "toilet" is present
        ("A seat in the park.", ["chair"]),
        ("Buses and a bus.", ["bus", "bus"]),  # inflect alone would turn "bus" into "bu"
        ("Skies above skis.", ["skis"]),  # "skies" must not become "ski"
        ("Scissors and wine glasses.", ["scissors", "wine glass"]),
        ("People, children and mice.", ["person", "person", "mouse"]),
        ("A bow tie.", ["tie"]),
        ("The sky is blue.", []),
    ],
)
def test_coco_mention_rules(text: str, expected: list[str]) -> None:
    assert extract_mentions(text, COCO_VOCABULARY) == expected


def test_coco_vocabulary_has_the_80_classes() -> None:
    assert len(COCO_VOCABULARY.classes) == 80
    assert {"person", "dining table", "tv", "hair drier", "skis"} <= COCO_VOCABULARY.classes


def test_custom_vocabulary_uses_the_same_rules() -> None:
    """A synthetic world's vocabulary: two-word surface forms, plurals and baby/adult animals."""
    vocab = ObjectVocabulary(
        name="toy",
        synonyms={
            "red cube": "cube",
            "cube": "cube",
            "block": "cube",
            "ball": "sphere",
            "puppy": "dog",
            "dog": "dog",
        },
        animals=frozenset({"dog"}),
    )
    text = "Two red cubes, a baby puppy, three balls and a blue block."
    assert extract_mentions(text, vocab) == ["cube", "dog", "sphere", "cube"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"synonyms": {"Cube": "cube"}},
        {"synonyms": {"big red cube": "cube"}},
        {"synonyms": {"cube": ""}},
        {"synonyms": {"cube": "cube"}, "animals": frozenset({"dog"})},
        {"synonyms": {"cube": "cube"}, "phrases": {"cube": "cube"}},
    ],
)
def test_vocabulary_rejects_malformed_tables(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ObjectVocabulary(name="bad", **kwargs)


ANSWERS = {
    1: "A man and a woman throw a frisbee to their dogs near a bench.",
    2: "A white toilet seat is up; the seat is clean, next to a sink.",
    3: "A baby cat sleeps on the sofa while the TV is on.",
    4: "Skies above a field.",
}
TRUTH = {1: {"person", "dog", "frisbee"}, 2: {"toilet", "sink"}, 3: {"cat", "couch"}, 4: {"elephant"}}


def test_chair_scores_by_hand() -> None:
    """Mentions per response (hallucinated in brackets):

    1: person, person, frisbee, dog, [bench]        5 mentions, 1 hallucinated, covers 3 of 3
    2: toilet (toilet seat), sink; "seat" dropped   2 mentions, 0 hallucinated, covers 2 of 2
    3: cat (baby cat), couch (sofa), [tv]           3 mentions, 1 hallucinated, covers 2 of 2
    4: none ("skies" is not "skis")                 0 mentions,                 covers 0 of 1

    CHAIR_i = 2 / 10 = 0.2; CHAIR_s = 2 / 4 = 0.5; refined CHAIR_s = 2 / 3 (response 4 has no
    objects); recall = (3 + 2 + 2 + 0) / (3 + 2 + 2 + 1) = 7 / 8; lengths 14, 14, 12, 4 -> 11.
    Without the toilet rule response 2 would hallucinate a chair; without the baby rule
    response 3 would hallucinate a person.
    """
    m = chair_scores(ANSWERS, TRUTH, COCO_VOCABULARY)
    assert m["chair_i"] == pytest.approx(0.2)
    assert m["chair_s"] == pytest.approx(0.5)
    assert m["chair_s_refined"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(7 / 8)
    assert m["avg_length"] == pytest.approx(11.0)
    assert (m["n_mentions"], m["n_hallucinated_mentions"], m["n_responses_with_objects"]) == (10, 2, 3)


def test_chair_scores_need_truth_for_every_answer() -> None:
    with pytest.raises(DataError, match="no ground truth"):
        chair_scores({99: "A dog."}, TRUTH, COCO_VOCABULARY)


def test_coco_truth_is_instances_union_caption_objects(coco_dir) -> None:
    """Image 1: instances {person, dog} ∪ captions {person, frisbee, dog (puppy)}.
    Image 2: {toilet} ∪ {toilet, sink}; the seat of the toilet seat is not a chair."""
    truth = load_coco_truth(coco_dir, image_ids=[1, 2])
    assert truth == {1: {"person", "dog", "frisbee"}, 2: {"toilet", "sink"}}


def test_coco_truth_rejects_unknown_image_ids(coco_dir) -> None:
    """An id in no annotation file would score every mention as a hallucination."""
    with pytest.raises(DataError, match=r"1 image id\(s\) not in the COCO annotations, e.g. \[42\]"):
        load_coco_truth(coco_dir, image_ids=[1, 42])


def test_coco_truth_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_coco_truth(tmp_path / "missing")
    with pytest.raises(DataError, match="instances_"):
        load_coco_truth(tmp_path)
    (tmp_path / "instances_val2014.json").write_text("{not json")
    (tmp_path / "captions_val2014.json").write_text("{}")
    with pytest.raises(DataError, match="instances_val2014.json:1: invalid JSON"):
        load_coco_truth(tmp_path)
