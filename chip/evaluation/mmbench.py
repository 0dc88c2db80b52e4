"""MMBench (Liu et al., "MMBench: Is Your Multi-modal Model an All-around Player?", 2023).

Single-choice questions; each question also appears with its options rotated (circular copies,
index + k · 1,000,000 in the benchmark's TSV). Scored as VLMEvalKit's MMBench evaluation scores
them (`ImageMCQDataset.evaluate_heuristic`, `mcq_circular_eval`, `can_infer`, `report_acc`):

- The prediction is read back as the prediction file would give it: an answer pandas reads as
  missing ("", "None", "NA", "null", "nan", "N/A", ...) becomes the text "nan".
- Option letter (`read_choice`): after replacing `.()[],:;!*#{}` by spaces, the answer's words are
  searched for the option letters; exactly one letter, among the last four words, is the choice
  (so a leading article "A" in a sentence is not); no letter but the word "Z", or one of four
  refusal phrases, reads as Z (wrong). Else "answer is X" (any case, optionally "correct answer
  is **X**") names the letter, even in "The answer is a cat" (A). Else, when the answer is at most
  twice as long as all option texts together, an option whose text the lower-cased answer
  contains, if exactly one does. Options are the non-missing A-Z cells: an option "None" or "NA"
  is missing to pandas and never exists.
- Circular: a question counts as right only when every answered copy reads as its right letter.
  If a copy reads as a wrong letter the question fails at once; copies no rule can read go to a
  judge LLM (up to three replies, each read by the same rules), in index order until one is wrong.
  Without a judge they fail. After three unreadable replies VLMEvalKit picks a random option; chip
  counts the copy as wrong and reports it in `n_judge_failed`.
- Accuracy = right questions / questions whose main row is answered, overall and per
  `l2-category` and `category` (VLMEvalKit prints the six MMBench l2-categories abbreviated).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chip.errors import DataError
from chip.evaluation.judge import JudgeClient, read_script_string

CIRCULAR_OFFSET = 1_000_000
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# pandas' default missing-value strings (read_csv and read_excel alike)
PANDAS_NA = frozenset(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)
_API_FAILURE = "Failed to obtain answer via API"
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_SEPARATORS = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_CHINESE = re.compile("[\u4e00-\u9fff]")
JUDGE_ATTEMPTS = 3

# chip's own wording of the judge's task; the reference's is read from the user's copy of its script.
PROMPT = (
    "A model answered a single-choice question. Tell me which option its answer picks: reply with "
    "that option's uppercase letter and nothing else, or with Z if the answer picks none of them.\n\n"
    "Question: {}\nOptions:\n{}Answer: {}\nLetter: "
)


@dataclass(frozen=True)
class MMBenchQuestion:
    """One TSV row: `options` are the non-missing letter columns in order, as text."""

    index: int
    question: str
    options: dict[str, str]
    answer: str | None
    hint: str | None = None
    category: str | None = None  # None when the TSV has no such column or cell
    l2_category: str | None = None
    split: str = "none"
    image: str | None = field(default=None, repr=False)  # base64, or the index of the row holding it


def read_tsv(path: str | Path) -> dict[int, MMBenchQuestion]:
    """The questions of an MMBench TSV, by index, read with pandas as VLMEvalKit reads them."""
    import pandas as pd  # only this benchmark needs pandas; other scorers start without it

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, sep="\t")
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a readable TSV ({err})") from err
    for column in ("index", "question", "A", "B"):
        if column not in table.columns:
            raise DataError(f"{path}: column {column!r}: missing")
    letters = [c for c in LETTERS if c in table.columns]

    def cell(value: object) -> str | None:
        return None if pd.isna(value) else str(value)

    questions: dict[int, MMBenchQuestion] = {}
    for number, row in enumerate(table.to_dict("records"), start=2):
        try:
            index = int(row["index"])
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}:{number}: field 'index': {row['index']!r} is not an integer") from err
        if index in questions:
            raise DataError(f"{path}:{number}: field 'index': duplicate value {index}")
        options = {c: text for c in letters if (text := cell(row[c])) is not None}
        questions[index] = MMBenchQuestion(
            index=index,
            question=str(row["question"]),
            options=options,
            answer=cell(row.get("answer")),
            hint=cell(row.get("hint")),
            category=cell(row.get("category")),
            l2_category=cell(row.get("l2-category")),
            split=cell(row.get("split")) or "none",
            image=cell(row.get("image")),
        )
    return questions


def read_back(answer: str) -> str:
    """The prediction as VLMEvalKit's evaluation reads it back from its prediction file."""
    return "nan" if answer in PANDAS_NA else answer


def _letter_choice(answer: str, options: Mapping[str, str]) -> str | None:
    if _API_FAILURE in answer:
        return None
    if any(refusal in answer for refusal in _REFUSALS):
        return "Z"
    words = answer.translate(_SEPARATORS).split()
    named = [letter for letter in options if letter in words]
    if len(named) == 1:
        # Only among the last four words: an "A" further back is usually the article.
        if words.index(named[0]) > len(words) - 5:
            return named[0]
    elif not named and "Z" in words:
        return "Z"
    match = _ANSWER_IS.search(answer)
    if match and match.group(1).upper() in options:
        return match.group(1).upper()
    return None


def _text_choice(answer: str, options: Mapping[str, str]) -> str | None:
    answer = answer.lower()
    if len(answer) > 2 * sum(len(text) for text in options.values()):
        return None
    found = [letter for letter, text in options.items() if text.lower() in answer]
    return found[0] if len(found) == 1 else None


def read_choice(answer: str, options: Mapping[str, str]) -> str | None:
    """The option letter (or "Z") VLMEvalKit's `can_infer` reads from an answer; None when it reads none."""
    return _letter_choice(answer, options) or _text_choice(answer, options)


def reference_templates(path: str | Path) -> tuple[str, str]:
    """The English and Chinese judge templates of the user's copy of VLMEvalKit's `multiple_choice.py`.

    Any other file is one template, used for every question.
    """
    script = "VLMEvalKit's vlmeval/dataset/utils/multiple_choice.py"
    english = read_script_string(path, "tmpl", script, function="build_prompt")
    if Path(path).suffix != ".py":
        return english, english
    return english, read_script_string(path, "tmpl", script, function="build_prompt_cn")


def judge_prompt(question: MMBenchQuestion, answer: str, templates: tuple[str, str] | None) -> str:
    """The judge's prompt: the reference's template (Chinese for questions with Chinese characters)
    filled as VLMEvalKit fills it, or chip's own wording."""
    if templates is None:
        options = "".join(f"{letter}. {text}\n" for letter, text in question.options.items())
        return PROMPT.format(question.question, options, answer)
    options = "There are several options: \n" + "".join(f"{k}. {v}\n" for k, v in question.options.items())
    template = templates[1] if _CHINESE.search(question.question) else templates[0]
    return template.format(question.question, options, answer)


def judge_choice(judge: JudgeClient, prompt: str, options: Mapping[str, str]) -> str | None:
    """The letter read from the judge's reply, asking up to `JUDGE_ATTEMPTS` times; None if never read."""
    for _ in range(JUDGE_ATTEMPTS):
        # A reply carrying VLMEvalKit's API-failure text is not read at all, as there.
        choice = judge.ask(prompt, parse=lambda r: None if _API_FAILURE in r else read_choice(r, options))
        if choice is not None:
            return choice
    return None


@dataclass
class CircularGroup:
    """A question and its answered circular copies (index order), and how the evaluation went."""

    rows: list[MMBenchQuestion]
    answers: list[str]  # as read back (see `read_back`)
    hit: bool = False
    judged: int = 0  # copies sent to the judge
    judge_failed: int = 0  # copies the judge gave no readable reply for

    @property
    def index(self) -> int:
        return self.rows[0].index


def _evaluate(group: CircularGroup, ask: Callable[[MMBenchQuestion, str], str | None] | None) -> None:
    readings = [read_choice(a, q.options) for q, a in zip(group.rows, group.answers)]
    if any(r is not None and r != q.answer for q, r in zip(group.rows, readings)):
        return
    for question, answer, reading in zip(group.rows, group.answers, readings):
        if reading is None:
            if ask is None:
                return
            group.judged += 1
            reading = ask(question, answer)
            if reading is None:
                group.judge_failed += 1
                return
        if reading != question.answer:
            return
    group.hit = True


def circular_groups(
    questions: Mapping[int, MMBenchQuestion],
    answers: Mapping[int, str],
    judge: JudgeClient | None = None,
    templates: tuple[str, str] | None = None,
    workers: int = 4,
) -> list[CircularGroup]:
    """Each answered main question (index < 1,000,000) with its answered copies, evaluated.

    `answers` maps TSV indices to raw answers. Answers to unknown indices, questions without a
    ground-truth `answer` and answers spanning several splits raise `DataError`.
    """
    unknown = [i for i in answers if i not in questions]
    if unknown:
        raise DataError(f"{len(unknown)} answer(s) to indices the TSV does not hold, e.g. {unknown[0]}")
    answered = sorted(answers)
    if any(questions[i].answer is None for i in answered):
        raise DataError(
            "the TSV has no ground truth ('answer') for some questions; test splits are scored by MMBench's server"
        )
    splits = {questions[i].split for i in answered}
    if len(splits) > 1:
        raise DataError(
            f"the answers span several splits ({', '.join(sorted(splits))}); score each split on its own"
        )
    members: dict[int, list[int]] = {}
    for index in answered:
        members.setdefault(index % CIRCULAR_OFFSET, []).append(index)
    groups = [
        CircularGroup([questions[i] for i in members[main]], [read_back(answers[i]) for i in members[main]])
        for main in answered
        if main < CIRCULAR_OFFSET
    ]

    def ask(question: MMBenchQuestion, answer: str) -> str | None:
        return judge_choice(judge, judge_prompt(question, answer, templates), question.options)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda g: _evaluate(g, ask if judge is not None else None), groups))
    return groups


def _accuracy(
    groups: Sequence[CircularGroup], key: Callable[[MMBenchQuestion], str | None]
) -> dict[str, dict[str, float]]:
    hits: dict[str, list[bool]] = {}
    for group in groups:
        name = key(group.rows[0])
        if name is not None:
            hits.setdefault(name, []).append(group.hit)
    return {name: {"accuracy": sum(h) / len(h)} for name, h in sorted(hits.items())}


def mmbench_scores(
    questions: Mapping[int, MMBenchQuestion],
    answers: Mapping[int, str],
    judge: JudgeClient | None = None,
    templates: tuple[str, str] | None = None,
    workers: int = 4,
) -> dict:
    """Circular accuracy overall, per l2-category and per category (fractions), with counts;
    arguments and errors as `circular_groups`."""
    groups = circular_groups(questions, answers, judge, templates, workers)
    if not groups:
        raise DataError("no answered question (only circular copies, index >= 1,000,000, were answered)")
    in_tsv = Counter(i % CIRCULAR_OFFSET for i in questions)
    return {
        "accuracy": sum(g.hit for g in groups) / len(groups),
        "l2_categories": _accuracy(groups, lambda q: q.l2_category),
        "categories": _accuracy(groups, lambda q: q.category),
        "n_questions": len(groups),
        "n_incomplete": sum(len(g.rows) < in_tsv[g.index] for g in groups),
        "n_unanswered": len(questions) - len(answers),
        "n_judged": sum(g.judged for g in groups),
        "n_judge_failed": sum(g.judge_failed for g in groups),
    }


def llava_prompt(question: MMBenchQuestion) -> str:
    """The prompt LLaVA's `model_vqa_mmbench.py --single-pred-prompt` builds: hint, question, the
    options A-D up to the first missing one, and the instruction (in Chinese for Chinese questions)."""
    text = question.question if question.hint is None else f"{question.hint}\n{question.question}"
    for letter in "ABCD":
        option = question.options.get(letter)
        if option is None or option.lower() in ("nan", "none"):
            break
        text += f"\n{letter}. {option}"
    chinese = _CHINESE.search(question.question)
    return text + (
        "\n请直接回答选项字母。"
        if chinese
        else "\nAnswer with the option's letter from the given choices directly."
    )


def image_of(question: MMBenchQuestion, questions: Mapping[int, MMBenchQuestion]) -> str:
    """The base64 image of a row; a short cell names the row that holds it, as in VLMEvalKit's TSVs."""
    image = question.image
    if image is not None and len(image) <= 64 and image.lstrip("-").isdigit() and int(image) in questions:
        image = questions[int(image)].image
    if image is None or len(image) <= 64:
        raise DataError(f"question {question.index}: no image in the TSV's 'image' column")
    return image
