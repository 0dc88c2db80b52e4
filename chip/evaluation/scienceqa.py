"""ScienceQA (Lu et al., "Learn to Explain: Multimodal Reasoning via Thought Chains for Science
Question Answering", 2022), test split; IMG = its problems with an image (2,017 of 4,241).

Scored as LLaVA's `llava/eval/eval_science_qa.py` scores it (the numbers LLaVA-family papers print
as SQA-IMG). The answer's option letter is read by the first rule that applies:

1. the answer is exactly one of "A"-"E";
2. it is at least three characters, the first one of "A"-"E" and the next two ". " ("B. a cat");
3. the pattern "The answer is X." (X a capital letter, "." any character) occurs exactly once.

Otherwise, or when the letter is past the problem's last choice, nothing is read (wrong). So "b",
"(B)", "B." and "The answer is B" (nothing after the letter) are wrong, "The answer is BC" reads B.
Accuracy = right / test problems (unanswered ones are wrong); IMG accuracy = right / answered
test problems with an image (the reference tells image problems by "<image>" in the answer's
prompt, which LLaVA's generation writes exactly for problems with an image, so an unanswered
problem is outside IMG's count).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chip.errors import DataError
from chip.evaluation.io import read_json

OPTIONS = "ABCDE"
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
# LLaVA's --single-pred-prompt instruction, appended to every question
INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class Problem:
    """The parts of a ScienceQA problem the score needs."""

    n_choices: int
    answer: int  # index of the right choice
    has_image: bool


def read_letter(answer: str) -> str | None:
    """The option letter the reference reads from an answer, or None (its "FAILED")."""
    if len(answer) == 1 and answer in OPTIONS:
        return answer
    if len(answer) >= 3 and answer[0] in OPTIONS and answer[1:3] == ". ":
        return answer[0]
    found = _ANSWER_IS.findall(answer)
    return found[0] if len(found) == 1 else None


def choice_index(letter: str | None, n_choices: int) -> int:
    """The chosen choice's index; -1 when no letter was read or it is past the last choice."""
    return OPTIONS.index(letter) if letter is not None and letter in OPTIONS[:n_choices] else -1


def read_problems(folder: str | Path, split: str = "test") -> tuple[dict[str, Problem], list[str]]:
    """All problems of ScienceQA's `problems.json` by id, and the ids of `split` in `pid_splits.json`."""
    folder = Path(folder)
    raw = read_json(folder / "problems.json")
    splits = read_json(folder / "pid_splits.json")
    if not isinstance(raw, dict) or not isinstance(splits, dict):
        raise DataError(f"{folder}: problems.json and pid_splits.json must hold JSON objects")
    if split not in splits:
        raise DataError(f"{folder / 'pid_splits.json'}: no split {split!r}")
    problems = {}
    for pid, problem in raw.items():
        for name in ("choices", "answer"):
            if not isinstance(problem, dict) or name not in problem:
                raise DataError(f"{folder / 'problems.json'}: problem {pid!r}: field {name!r}: missing")
        problems[str(pid)] = Problem(
            len(problem["choices"]), int(problem["answer"]), problem.get("image") is not None
        )
    ids = [str(pid) for pid in splits[split]]
    missing = [pid for pid in ids if pid not in problems]
    if missing:
        raise DataError(
            f"{folder / 'pid_splits.json'}: split {split!r} names {missing[0]!r}, not in problems.json"
        )
    return problems, ids


def scienceqa_scores(
    problems: Mapping[str, Problem], split_ids: list[str], answers: Mapping[str, str]
) -> dict:
    """Accuracy over the split and over its answered image problems (fractions), with counts.

    Answers to ids outside problems.json raise `DataError`; answers to problems of other splits
    are not scored (the reference ignores them too) and are counted in `n_outside_split`.
    """
    unknown = [pid for pid in answers if pid not in problems]
    if unknown:
        raise DataError(f"{len(unknown)} answer(s) to problems not in problems.json, e.g. {unknown[0]!r}")
    correct = img_correct = img_total = failed = 0
    for pid in split_ids:
        problem = problems[pid]
        if pid not in answers:
            continue
        index = choice_index(read_letter(answers[pid]), problem.n_choices)
        failed += index == -1
        right = index == problem.answer
        correct += right
        if problem.has_image:
            img_total += 1
            img_correct += right
    in_split = set(split_ids)
    metrics = {
        "accuracy": correct / len(split_ids),
        "img_accuracy": img_correct / img_total if img_total else None,
        "n": len(split_ids),
        "n_img": img_total,
        "n_unread": failed,
        "n_unanswered": sum(pid not in answers for pid in split_ids),
        "n_outside_split": sum(pid not in in_split for pid in answers),
    }
    return {k: v for k, v in metrics.items() if v is not None}


def llava_question(entry: object, where: str) -> tuple[str, str, str | None]:
    """(id, prompt, image) of one entry of LLaVA's ScienceQA question file (llava_test_CQM-A.json):
    the human turn without "<image>", stripped, plus the instruction, as `model_vqa_science.py` asks."""
    turns = entry.get("conversations") if isinstance(entry, dict) else None
    first = turns[0] if isinstance(turns, list) and turns else None
    if not isinstance(first, dict) or "id" not in entry or not isinstance(first.get("value"), str):
        raise DataError(f"{where}: expected LLaVA's question layout (id, conversations[0].value)")
    prompt = first["value"].replace("<image>", "").strip() + "\n" + INSTRUCTION
    return str(entry["id"]), prompt, entry.get("image")
