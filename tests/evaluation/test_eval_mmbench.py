"""MMBench: option reading, circular evaluation and the judge fallback by hand; TSV input; prompts."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from chip.errors import ConfigError, DataError
from chip.evaluation import mmbench
from chip.evaluation.benchmarks import BENCHMARKS
from chip.evaluation.cli import main
from chip.evaluation.judge import JudgeClient

COLUMNS = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "l2-category",
    "split",
    "image",
]


def png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_tsv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in COLUMNS} for row in rows)
    return path


def pair(index: int, answer: str, category: str = "image_scene", question: str = "What is it?") -> list[dict]:
    """A two-option question (A dog, B cat) and its copy with the options swapped."""
    base = {"question": question, "category": category, "l2-category": "coarse_perception", "split": "dev"}
    other = "B" if answer == "A" else "A"
    return [
        {**base, "index": index, "A": "dog", "B": "cat", "answer": answer, "image": png()},
        {**base, "index": index + 1_000_000, "A": "cat", "B": "dog", "answer": other, "image": str(index)},
    ]


@pytest.fixture
def tsv(tmp_path) -> Path:
    return write_tsv(tmp_path / "q.tsv", pair(1, "A") + pair(2, "A") + pair(3, "B", category="image_style"))


OPTIONS = {"A": "horse", "B": "cat"}


@pytest.mark.parametrize(
    ("answer", "choice"),
    [
        ("B", "B"),
        ("(B)", "B"),  # brackets and other punctuation become spaces
        ("**B**.", "B"),
        ("b", None),  # letters are upper case only
        ("A or B", None),  # two letters: none
        ("A horse is in it", "A"),  # "A" is not among the last four words; the text names A
        ("A small animal is standing in the field", None),  # "A" too far back, no option text
        ("The answer is a cat", "A"),  # "answer is a" names A, whatever follows
        ("the correct answer is **b**", "B"),
        ("cat", "B"),  # an option's text without its letter
        ("a cat or a horse", None),  # two option texts
        ("I see a cat " * 3, None),  # longer than twice the option texts (2 · 8 characters): no text reading
        ("Z", "Z"),
        ("Cannot determine the answer", "Z"),  # a refusal
        ("C", None),  # not an option here
    ],
)
def test_read_choice(answer, choice) -> None:
    assert mmbench.read_choice(answer, OPTIONS) == choice


@pytest.mark.parametrize(
    ("answer", "back"), [("", "nan"), ("None", "nan"), ("NA", "nan"), (" None", " None"), ("B", "B")]
)
def test_read_back_as_pandas_reads_a_prediction_file(answer, back) -> None:
    assert mmbench.read_back(answer) == back


def test_read_back_uses_pandas_missing_values() -> None:
    from pandas._libs.parsers import STR_NA_VALUES

    assert mmbench.PANDAS_NA == STR_NA_VALUES


def test_circular_evaluation_by_hand(tsv) -> None:
    """Question 1 (truth A; copy truth B) answered "A", "B": right. Question 2 answered "A" and,
    for its copy, "Z": wrong. Question 3 (image_style, truth B; copy truth A) answered "hmm" (no
    option read) and "A": without a judge wrong. Accuracy 1/3; image_scene 1/2, image_style 0."""
    questions = mmbench.read_tsv(tsv)
    answers = {1: "A", 1_000_001: "B", 2: "A", 1_000_002: "Z", 3: "hmm", 1_000_003: "A"}
    metrics = mmbench.mmbench_scores(questions, answers)
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["categories"] == {"image_scene": {"accuracy": 0.5}, "image_style": {"accuracy": 0.0}}
    assert metrics["l2_categories"] == {"coarse_perception": {"accuracy": pytest.approx(1 / 3)}}
    assert (metrics["n_questions"], metrics["n_judged"], metrics["n_incomplete"]) == (3, 0, 0)
    # Question 1 without its copy: one question, right, incomplete; the other rows unanswered.
    metrics = mmbench.mmbench_scores(questions, {1: "A"})
    assert (metrics["accuracy"], metrics["n_incomplete"], metrics["n_unanswered"]) == (1.0, 1, 5)


def test_judge_reads_what_rules_cannot(tsv, fake_judge) -> None:
    """Question 3's "hmm" goes to the judge. It replies "B" (right): question 3 holds, 2/3.
    Replying "maybe" three times (unreadable each time): the copy is wrong, counted as a judge
    failure, after exactly three requests. Question 2 fails on its own reading and never asks."""
    questions = mmbench.read_tsv(tsv)
    answers = {1: "A", 1_000_001: "B", 2: "A", 1_000_002: "Z", 3: "hmm", 1_000_003: "A"}
    judge = JudgeClient(fake_judge.url, backoff=0.0)
    fake_judge.respond = lambda prompt: "B"
    metrics = mmbench.mmbench_scores(questions, answers, judge)
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["n_judged"] == 1
    assert len(fake_judge.requests) == 1
    assert "What is it?" in fake_judge.requests[0]["messages"][-1]["content"]
    fake_judge.respond = lambda prompt: "maybe"
    metrics = mmbench.mmbench_scores(questions, answers, judge)
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["n_judge_failed"] == 1
    assert len(fake_judge.requests) == 1 + mmbench.JUDGE_ATTEMPTS


SCRIPT = """
def build_prompt(question, options, prediction):
    tmpl = (
        'Match it. '
        'Question: {}?\\nOptions: {}\\nAnswer: {}\\nYour output: '
    )
    return tmpl.format(question, options, prediction)


def build_prompt_cn(question, options, prediction):
    tmpl = '问题: {}?\\n选项: {}\\n答案: {}\\n输出: '
    return tmpl.format(question, options, prediction)


def build_prompt_other(question, options, prediction):
    tmpl = 'not this one {} {} {}'
    return tmpl
"""


def test_reference_template_is_read_from_the_users_script(tmp_path, tsv, fake_judge) -> None:
    """With --judge-prompt multiple_choice.py the prompt is the script's `build_prompt` template
    filled as VLMEvalKit fills it: the question (its "?" doubled, as the template adds one), the
    options under "There are several options: ", the answer; Chinese questions get `build_prompt_cn`'s."""
    script = tmp_path / "multiple_choice.py"
    script.write_text(SCRIPT, encoding="utf-8")
    english, chinese = mmbench.reference_templates(script)
    question = mmbench.read_tsv(tsv)[3]
    assert mmbench.judge_prompt(question, "hmm", (english, chinese)) == (
        "Match it. Question: What is it??\nOptions: There are several options: \nA. dog\nB. cat\n"
        "\nAnswer: hmm\nYour output: "
    )
    cn = mmbench.MMBenchQuestion(9, "这是什么", {"A": "狗"}, "A")
    assert mmbench.judge_prompt(cn, "狗", (english, chinese)).startswith("问题: 这是什么?\n选项: There are")
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"question_id": 3, "answer": "hmm"}) + "\n")
    fake_judge.respond = lambda prompt: "B"
    out = tmp_path / "m.json"
    main(
        [
            "--bench",
            "mmbench",
            "--answers",
            str(answers),
            "--questions",
            str(tsv),
            "--judge-url",
            fake_judge.url,
            "--judge-prompt",
            str(script),
            "--output",
            str(out),
        ]
    )
    assert fake_judge.requests[0]["messages"][-1]["content"] == mmbench.judge_prompt(
        question, "hmm", (english, chinese)
    )
    metrics = json.loads(out.read_text())
    assert metrics["accuracy"] == 1.0 and metrics["judge_prompt"].startswith("reference template from")
    (tmp_path / "broken.py").write_text("def build_prompt():\n    return 1\n")
    with pytest.raises(ConfigError, match="no string assigned to `tmpl` in `build_prompt`"):
        mmbench.reference_templates(tmp_path / "broken.py")


def test_tsv_and_answer_errors(tmp_path, tsv) -> None:
    rows = pair(1, "A")
    bad = write_tsv(tmp_path / "bad.tsv", [{**r, "index": "x"} for r in rows])
    with pytest.raises(DataError, match="bad.tsv:2: field 'index': 'x' is not an integer"):
        mmbench.read_tsv(bad)
    (tmp_path / "noq.tsv").write_text("index\tA\tB\n1\tx\ty\n")
    with pytest.raises(DataError, match="column 'question': missing"):
        mmbench.read_tsv(tmp_path / "noq.tsv")
    questions = mmbench.read_tsv(tsv)
    with pytest.raises(DataError, match="indices the TSV does not hold, e.g. 7"):
        mmbench.mmbench_scores(questions, {7: "A"})
    test_split = mmbench.read_tsv(write_tsv(tmp_path / "test.tsv", [{**r, "answer": ""} for r in rows]))
    with pytest.raises(DataError, match="scored by MMBench's server"):
        mmbench.mmbench_scores(test_split, {1: "A"})
    mixed = mmbench.read_tsv(write_tsv(tmp_path / "mixed.tsv", [rows[0], {**rows[1], "split": "test"}]))
    with pytest.raises(DataError, match="several splits \\(dev, test\\)"):
        mmbench.mmbench_scores(mixed, {1: "A", 1_000_001: "B"})
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"index": 1, "answer": "A"}) + "\n")  # VLMEvalKit's name for the id
    main(
        [
            "--bench",
            "mmbench",
            "--answers",
            str(answers),
            "--questions",
            str(tsv),
            "--output",
            str(tmp_path / "m.json"),
        ]
    )
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == 1.0


def test_generation_questions_use_llavas_prompt_and_inline_images(tmp_path) -> None:
    """LLaVA's prompt: hint, question, options A-D up to the first missing one, the instruction.
    The copy's image cell names the main row, whose base64 image it gets."""
    rows = pair(5, "B")
    rows[0] = {**rows[0], "hint": "Look closely.", "C": "", "D": "bird"}
    tsv = write_tsv(tmp_path / "q.tsv", rows)
    args = argparse.Namespace(bench="mmbench", questions=[str(tsv)], image_root=".")
    questions = BENCHMARKS["mmbench"].questions(args)
    assert [q.id for q in questions] == [5, 1_000_005]
    assert questions[0].prompt == (
        "Look closely.\nWhat is it?\nA. dog\nB. cat\nAnswer with the option's letter from the given choices directly."
    )
    assert (
        questions[1].image == "q.tsv#1000005" and questions[1].image_data == questions[0].image_data == png()
    )
    cn = mmbench.MMBenchQuestion(1, "这是什么", {"A": "狗", "B": "猫"}, "A")
    assert mmbench.llava_prompt(cn) == "这是什么\nA. 狗\nB. 猫\n请直接回答选项字母。"
    with pytest.raises(DataError, match="question 1: no image"):
        mmbench.image_of(cn, {1: cn})


def test_generation_end_to_end_with_a_tiny_model(tiny_model, tmp_path) -> None:
    """`chip eval --bench mmbench --model`: images decoded from the TSV, answers written with the
    prompts, then scored (the random model's answers read as whatever they read as)."""
    tsv = write_tsv(tmp_path / "q.tsv", pair(1, "A") + pair(2, "B"))
    out = tmp_path / "m.json"
    main(
        [
            "--bench",
            "mmbench",
            "--model",
            str(tiny_model("llava")),
            "--questions",
            str(tsv),
            "--output",
            str(out),
            "--max-new-tokens",
            "2",
            "--batch-size",
            "4",
        ]
    )
    rows = [json.loads(line) for line in out.with_suffix(".answers.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [1, 2, 1_000_001, 1_000_002]
    assert rows[2]["prompt"].endswith(
        "A. cat\nB. dog\nAnswer with the option's letter from the given choices directly."
    )
    metrics = json.loads(out.read_text())
    assert metrics["benchmark"] == "mmbench" and metrics["n_questions"] == 2 and metrics["n_answers"] == 4
