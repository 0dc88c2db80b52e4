"""HallusionBench (Guan et al., CVPR 2024): yes/no questions over figures, some of them edited.

    aAcc = correct questions / questions
    fAcc = figures whose questions are all correct / figures       (questions without a figure
           -- category VS, figure_id 0 -- are left out, as in the reference)
    qAcc = question groups (one question asked over several figures) all correct / groups

Whether an answer is correct is decided either by a judge LLM comparing it with the reference
explanation (the reference scorer), or offline by reading it as yes/no with chip's yes/no rule and
comparing with `gt_answer` ("1" = yes). The metrics say which scorer produced them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from chip.errors import DataError
from chip.evaluation.judge import JudgeClient
from chip.evaluation.yesno import parse_label, reads_as_yes

KEY_FIELDS = ("category", "subcategory", "set_id", "figure_id", "question_id")

_PROMPT = """You are checking an assistant's answer against a reference answer.
Read the question, the reference answer and the assistant's answer. Reply with one word:
"correct" if the assistant's answer agrees with the reference, "incorrect" if it contradicts it,
or "unclear" if it does not commit to an answer.

Question: {question}
Reference answer: {reference}
Assistant's answer: {answer}
Verdict:"""

# judge verdict word -> answer counted as correct; "incorrect" is tested first since it contains "correct"
_VERDICTS: tuple[tuple[str, bool], ...] = (("incorrect", False), ("correct", True), ("unclear", False))


def question_key(row: Mapping[str, object]) -> str:
    """The id of one HallusionBench row: category_subcategory_setid_figureid_questionid."""
    missing = [f for f in KEY_FIELDS if f not in row]
    if missing:
        raise DataError(f"HallusionBench row: field {missing[0]!r}: missing")
    return "_".join(str(row[f]) for f in KEY_FIELDS)


def rule_correctness(
    answers: Mapping[Hashable, str], rows: Mapping[Hashable, Mapping[str, object]]
) -> dict[Hashable, bool]:
    """Offline scorer: the answer read as yes/no equals the row's `gt_answer`."""
    correct = {}
    for key, answer in answers.items():
        label = parse_label(rows[key].get("gt_answer"))
        if label is None:
            raise DataError(
                f"HallusionBench {key}: field 'gt_answer': {rows[key].get('gt_answer')!r} is not 0/1"
            )
        correct[key] = reads_as_yes(answer) == label
    return correct


def parse_verdict(reply: str) -> bool | None:
    """The judge's verdict: True for correct, False for incorrect/unclear, None if it gave none."""
    text = reply.lower()
    for word, is_correct in _VERDICTS:
        if word in text:
            return is_correct
    return None


def judge_correctness(
    answers: Mapping[Hashable, str],
    rows: Mapping[Hashable, Mapping[str, object]],
    judge: JudgeClient,
    workers: int = 4,
) -> dict[Hashable, bool]:
    """Reference scorer: a judge LLM compares each answer with `gt_answer_details`.

    An unreadable or failed reply counts as not correct (the judge's counters report how many).
    """
    keys = list(answers)
    prompts = [
        _PROMPT.format(
            question=rows[k].get("question", ""),
            reference=rows[k].get("gt_answer_details") or rows[k].get("gt_answer", ""),
            answer=answers[k],
        )
        for k in keys
    ]
    verdicts = judge.ask_many(prompts, parse_verdict, workers=workers)
    return {k: bool(v) for k, v in zip(keys, verdicts)}


def _all_correct_share(
    correct: Mapping[Hashable, bool], groups: Mapping[Hashable, tuple]
) -> tuple[float, int]:
    members: dict[tuple, list[bool]] = {}
    for key, group in groups.items():
        members.setdefault(group, []).append(correct[key])
    n = len(members)
    return (sum(all(v) for v in members.values()) / n if n else 0.0), n


def hallusion_scores(correct: Mapping[Hashable, bool], rows: Mapping[Hashable, Mapping[str, object]]) -> dict:
    """aAcc, fAcc and qAcc (fractions) over the answered questions in `correct`."""
    field = {key: {f: str(rows[key][f]) for f in KEY_FIELDS} for key in correct}
    figure_groups = {
        key: (f["category"], f["subcategory"], f["set_id"], f["figure_id"])
        for key, f in field.items()
        if not (f["category"] == "VS" and f["figure_id"] == "0")
    }
    question_groups = {
        key: (f["category"], f["subcategory"], f["set_id"], f["question_id"]) for key, f in field.items()
    }
    f_acc, n_figures = _all_correct_share(correct, figure_groups)
    q_acc, n_groups = _all_correct_share(correct, question_groups)
    n = len(correct)
    return {
        "a_acc": sum(correct.values()) / n if n else 0.0,
        "f_acc": f_acc,
        "q_acc": q_acc,
        "n": n,
        "n_figures": n_figures,
        "n_question_groups": n_groups,
    }
