"""MME (Fu et al., "MME: A Comprehensive Evaluation Benchmark for Multimodal Large Language Models", 2023).

Yes/no questions over 14 subtasks, two per image (one true, one false as a rule). Scored as the
benchmark's `eval_tool/calculation.py` scores them:

- An answer is lower-cased; exactly "yes" or "no" is that, else its first four characters decide:
  "yes" in them reads as yes, else "no" in them reads as no, else it is "other" (always wrong).
  So "Yes, it is" is yes and "Not" is no, but "I think yes" is other, "eyes" is yes, "snow",
  "know" and "none" are no, " yes" is yes while "  yes" is other.
- Per subtask: acc = correct answers / questions; acc+ = images with both answers correct / images
  (an image's two questions are consecutive lines of the subtask's file); score = 100 · acc + 100 · acc+.
- Perception = the sum of the scores of its 10 subtasks (max 2000); cognition of its 4 (max 800).

The results layout the tool reads is one `TASK.txt` per subtask, each line
`image<TAB>question<TAB>ground truth<TAB>prediction`; the tool's readme asks for line breaks to be
deleted from predictions, so chip reads an answer given elsewhere (JSON Lines) with its line breaks
deleted. A question without an answer is read as an empty answer (other) and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chip.errors import DataError

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
GROUPS = {"perception": PERCEPTION, "cognition": COGNITION}


@dataclass(frozen=True)
class MMEQuestion:
    """One line of a subtask file: `truth` is "yes" or "no" (lower-cased, as the tool compares)."""

    task: str
    image: str
    question: str
    truth: str

    @property
    def id(self) -> str:
        """The answer-row id chip uses: subtask, image file and question text."""
        return f"{self.task}/{self.image}/{self.question}"


def read_answer(answer: str) -> str:
    """The tool's reading of one answer: "yes", "no" or "other" (see the module docstring)."""
    text = answer.replace("\r", "").replace("\n", "").lower()
    if text in ("yes", "no"):
        return text
    if "yes" in text[:4]:
        return "yes"
    if "no" in text[:4]:
        return "no"
    return "other"


def _read_task_file(path: Path) -> list[tuple[MMEQuestion, str | None]]:
    rows: list[tuple[MMEQuestion, str | None]] = []
    # readlines() splits where the reference does: at "\n" only, after universal-newline translation.
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        fields = line.removesuffix("\n").split("\t")
        if len(fields) not in (3, 4):
            raise DataError(
                f"{path}:{number}: expected 3 or 4 tab-separated fields (image, question, ground truth"
                f"[, prediction]), got {len(fields)}"
            )
        truth = fields[2].lower()
        if truth not in ("yes", "no"):
            raise DataError(f"{path}:{number}: field 'ground truth': {fields[2]!r} is not yes or no")
        question = MMEQuestion(path.stem, fields[0], fields[1], truth)
        rows.append((question, fields[3] if len(fields) == 4 else None))
    if len(rows) % 2:
        raise DataError(f"{path}: {len(rows)} lines; MME has two questions per image on consecutive lines")
    for first in range(0, len(rows), 2):
        if rows[first][0].image != rows[first + 1][0].image:
            raise DataError(
                f"{path}:{first + 2}: image {rows[first + 1][0].image!r} follows {rows[first][0].image!r}; "
                "an image's two questions must be consecutive lines"
            )
    return rows


def read_results_folder(folder: str | Path) -> tuple[list[MMEQuestion], dict[str, str]]:
    """Questions (in file order, subtask by subtask) and answers by id from a folder of `TASK.txt`.

    Lines may have three fields (the tool's blank template, no answers) or four. A `.txt` file that
    names no MME subtask, a malformed line, a ground truth other than yes/no, an odd line count,
    an image whose questions are not consecutive, or a repeated question raise `DataError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of MME subtask files")
    order = {task: i for i, task in enumerate(PERCEPTION + COGNITION)}
    files = sorted(folder.glob("*.txt"), key=lambda p: (order.get(p.stem, len(order)), p.name))
    unknown = [p.name for p in files if p.stem not in PERCEPTION + COGNITION]
    if unknown:
        raise DataError(
            f"{folder}: {unknown[0]} names no MME subtask (expected {', '.join(PERCEPTION + COGNITION)})"
        )
    if not files:
        raise DataError(f"{folder}: no MME subtask files (TASK.txt)")
    questions: list[MMEQuestion] = []
    answers: dict[str, str] = {}
    seen: set[str] = set()
    for path in files:
        for question, prediction in _read_task_file(path):
            if question.id in seen:
                raise DataError(
                    f"{path}: question {question.question!r} of image {question.image!r} is repeated"
                )
            seen.add(question.id)
            questions.append(question)
            if prediction is not None:
                answers[question.id] = prediction
    return questions, answers


def _task_metrics(questions: Sequence[MMEQuestion], answers: Mapping[str, str]) -> dict[str, float | int]:
    readings = [read_answer(answers.get(q.id, "")) for q in questions]
    correct = [r == q.truth for q, r in zip(questions, readings)]
    both = sum(correct[i] and correct[i + 1] for i in range(0, len(correct), 2))
    accuracy = sum(correct) / len(correct)
    accuracy_plus = both / (len(correct) // 2)
    return {
        "accuracy": accuracy,
        "accuracy_plus": accuracy_plus,
        "score": accuracy * 100 + accuracy_plus * 100,
        "n_other": readings.count("other"),
        "n": len(questions),
    }


def mme_scores(questions: Sequence[MMEQuestion], answers: Mapping[str, str]) -> dict:
    """Per-subtask accuracy, accuracy+ (fractions) and score, and the perception/cognition totals.

    `questions` are in their files' order (an image's two questions consecutive); `answers` maps
    `MMEQuestion.id` to the model's answer. A group's total sums the subtasks present; subtasks
    absent from `questions` are listed in `tasks_missing`. Answers to unknown ids raise `DataError`.
    """
    known = {q.id for q in questions}
    unknown = [k for k in answers if k not in known]
    if unknown:
        raise DataError(
            f"{len(unknown)} answer(s) to questions the MME files do not hold, e.g. {unknown[0]!r}"
        )
    by_task: dict[str, list[MMEQuestion]] = {}
    for question in questions:
        by_task.setdefault(question.task, []).append(question)
    tasks = {
        task: _task_metrics(by_task[task], answers)
        for group in GROUPS.values()
        for task in group
        if task in by_task
    }
    totals = {}
    for name, group in GROUPS.items():
        total = 0.0
        for task in group:
            if task in tasks:
                total += tasks[task]["score"]
        totals[name] = total
    return {
        **totals,
        "tasks": tasks,
        "n_other": sum(t["n_other"] for t in tasks.values()),
        "n_unanswered": len(known) - len(answers),
        "tasks_missing": [t for group in GROUPS.values() for t in group if t not in by_task],
    }


def llava_prompt(question: str) -> str:
    """The prompt LLaVA-1.5's MME evaluation asks (`llava_mme.jsonl`): the benchmark's "Please answer
    yes or no." replaced by LLaVA's short-answer instruction."""
    return (
        question.replace("Please answer yes or no.", "").strip()
        + "\nAnswer the question using a single word or phrase."
    )
