"""MMHal-Bench and HallusionBench: hand-worked scores, rule-based fallback, judge via a local server."""

from __future__ import annotations

import pytest

from chip.errors import ConfigError
from chip.evaluation.hallusion import (
    hallusion_scores,
    judge_correctness,
    parse_verdict,
    question_key,
    rule_correctness,
)
from chip.evaluation.judge import JudgeClient
from chip.evaluation.mmhal import (
    build_prompt,
    judge_mmhal,
    load_reference_template,
    mmhal_scores,
    parse_rating,
    parse_rating_official,
)


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("Accurate and detailed. Rating: 5", 5),
        ("A rating: 2 would be harsh... Final verdict.\nRating: 4", 4),  # the last one is the verdict
        ("**Rating:** 3", 3),
        ("rating=0", 0),
        ("Rating: 9", None),
        ("I'd give it 7/10.", None),
    ],
)
def test_parse_rating(reply: str, rating: int | None) -> None:
    assert parse_rating(reply) == rating


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("Accurate and detailed. Rating: 5", 5),
        ("RATING: 0", 0),  # the reply is lower-cased first
        ("A rating: 2 would be harsh... Final verdict.\nRating: 4", None),  # two ratings: scored 0
        ("**Rating:** 3", None),  # "rating:** 3" is not "rating: 3"
        ("rating=0", None),
        ("Rating: 56", 5),  # a substring test: "rating: 5" occurs
        ("no idea", None),
    ],
)
def test_parse_rating_official(reply: str, rating: int | None) -> None:
    assert parse_rating_official(reply) == rating


def test_reference_template_is_read_from_the_script(tmp_path) -> None:
    """The reference script is not shipped; chip reads the string assigned to `template` from the user's copy."""
    script = tmp_path / "eval_gpt4.py"
    script.write_text('import json\ntemplate = """Objects: {}\nQ: {}\nRef: {}\nA: {}"""\nprint(1)\n')
    template = load_reference_template(script)
    row = {"image_content": ["dog", "frisbee"], "question": "What?", "gt_answer": "A frisbee."}
    assert (
        build_prompt(row, "A ball.", template)
        == "Objects: dog, frisbee\nQ: What?\nRef: A frisbee.\nA: A ball."
    )
    (tmp_path / "other.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="template"):
        load_reference_template(tmp_path / "other.py")
    with pytest.raises(ConfigError, match="not found"):
        load_reference_template(tmp_path / "missing.py")


def test_mmhal_scores_by_hand() -> None:
    """Ratings 6, 2, unreadable (-> 0), 4: score = 12/4 = 3.0; ratings < 3 are 2 and 0 -> 2/4;
    attribute = (6 + 2)/2 = 4, counting = 0, relation = 4."""
    ratings = {"0": 6, "1": 2, "2": None, "3": 4}
    types = {"0": "attribute", "1": "attribute", "2": "counting", "3": "relation"}
    m = mmhal_scores(ratings, types)
    assert m["score"] == pytest.approx(3.0)
    assert m["hallucination_rate"] == pytest.approx(0.5)
    assert m["per_type"] == {"attribute": 4.0, "counting": 0.0, "relation": 4.0}
    assert m["n_unparseable"] == 1


def test_mmhal_prompt_carries_the_row() -> None:
    row = {
        "image_content": ["dog", "frisbee"],
        "question": "What is the dog holding?",
        "gt_answer": "A frisbee.",
    }
    prompt = build_prompt(row, "A ball.")
    assert "dog, frisbee" in prompt and "What is the dog holding?" in prompt
    assert "A frisbee." in prompt and "A ball." in prompt and "Rating: X" in prompt


def test_judge_mmhal_through_local_server(fake_judge) -> None:
    """The server rates by what the answer says; one reply is an HTTP 500 retried successfully,
    one is unreadable and becomes a 0."""
    ratings_by_answer = {"good": "Rating: 6", "meh": "Meh.\nRating: 3", "bad": "no idea"}
    fake_judge.respond = lambda prompt: next(v for k, v in ratings_by_answer.items() if f"\n{k}\n" in prompt)
    fake_judge.script = [(500, b"", 0.0)]
    rows = {str(i): {"image_content": [], "question": "q", "gt_answer": "g"} for i in range(3)}
    judge = JudgeClient(fake_judge.url, retries=1, backoff=0.0)
    ratings = judge_mmhal({"0": "good", "1": "meh", "2": "bad"}, rows, judge, workers=1)
    assert ratings == {"0": 6, "1": 3, "2": None}
    assert judge.stats.unparseable == 1 and judge.stats.retries == 1


ROWS = [
    # VD set 0: two questions over an original figure (0) and an edited one (1)
    ("VD", "illusion", 0, 0, 0, "1"),
    ("VD", "illusion", 0, 0, 1, "0"),
    ("VD", "illusion", 0, 1, 0, "0"),
    ("VD", "illusion", 0, 1, 1, "0"),
    # VS set 1: one question without a figure (0) and with one (1)
    ("VS", "chart", 1, 0, 0, "1"),
    ("VS", "chart", 1, 1, 0, "0"),
]
FIELDS = ("category", "subcategory", "set_id", "figure_id", "question_id", "gt_answer")
HB_ROWS = {
    question_key(r): {**r, "question": "Is it so?", "gt_answer_details": "ref"}
    for r in (dict(zip(FIELDS, row)) for row in ROWS)
}
HB_ANSWERS = {
    "VD_illusion_0_0_0": "Yes, it is.",  # correct
    "VD_illusion_0_0_1": "No.",  # correct
    "VD_illusion_0_1_0": "Yes, the lines are equal.",  # wrong
    "VD_illusion_0_1_1": "No, they are not.",  # correct
    "VS_chart_1_0_0": "Yes.",  # correct
    "VS_chart_1_1_0": "Yes.",  # wrong
}


def test_hallusion_scores_by_hand() -> None:
    """aAcc = 4/6.
    fAcc over figures (VS figure 0 has no figure and is left out): VD-0-fig0 {✓,✓} yes,
    VD-0-fig1 {✗,✓} no, VS-1-fig1 {✗} no -> 1/3.
    qAcc over question groups: VD-0-q0 {✓,✗} no, VD-0-q1 {✓,✓} yes, VS-1-q0 {✓,✗} no -> 1/3.
    """
    m = hallusion_scores(rule_correctness(HB_ANSWERS, HB_ROWS), HB_ROWS)
    assert (m["a_acc"], m["f_acc"], m["q_acc"]) == pytest.approx((4 / 6, 1 / 3, 1 / 3))
    assert (m["n_figures"], m["n_question_groups"]) == (3, 3)


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Correct", True),
        ("incorrect.", False),
        ("Unclear", False),
        ("The prediction is correct.", True),
        ("?", None),
    ],
)
def test_parse_verdict(reply: str, verdict: bool | None) -> None:
    assert parse_verdict(reply) is verdict


def test_hallusion_judge_scorer(fake_judge) -> None:
    """The judge calls everything correct except one answer it rejects and one unreadable reply:
    6 - 2 = 4 correct; the unreadable one counts as wrong and is reported."""
    fake_judge.respond = lambda prompt: (
        "Incorrect" if "lines are equal" in prompt else "???" if "they are not" in prompt else "Correct"
    )
    judge = JudgeClient(fake_judge.url, retries=0)
    correct = judge_correctness(HB_ANSWERS, HB_ROWS, judge, workers=2)
    assert sum(correct.values()) == 4 and not correct["VD_illusion_0_1_1"]
    assert judge.stats.unparseable == 1
