"""The general-ability benchmarks of `chip eval`: what preference training may cost a model.

MME, MMBench and ScienceQA-IMG, each scored as its reference evaluation scores it (see the
scorer modules `mme.py`, `mmbench.py`, `scienceqa.py`) and generated for with the prompts of
LLaVA-1.5's evaluation scripts. The entries join `benchmarks.BENCHMARKS` with `kind="general"`.
"""

from __future__ import annotations

import argparse
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path

from chip.errors import ConfigError, DataError
from chip.evaluation import mmbench, mme, scienceqa
from chip.evaluation.io import read_json
from chip.evaluation.judge import JudgeClient
from chip.evaluation.registry import Benchmark, Question, single_path

# --- MME -----------------------------------------------------------------------------------------

_MME_SCORER = "rule-based (MME eval_tool/calculation.py reading: yes/no from the first four characters)"


def _mme_native(path: Path) -> dict[Hashable, str] | None:
    # A folder of TASK.txt is the benchmark's own results layout: it holds the answers.
    if not path.is_dir():
        return None
    questions, answers = mme.read_results_folder(path)
    if len(answers) < len(questions):
        raise DataError(f"{path}: {len(questions) - len(answers)} line(s) have no prediction (fourth field)")
    return dict(answers)


def _mme_truth(args: argparse.Namespace) -> list[mme.MMEQuestion]:
    if args.questions:
        return mme.read_results_folder(single_path(args, "questions"))[0]
    if args.answers and Path(args.answers).is_dir():
        return mme.read_results_folder(args.answers)[0]
    raise ConfigError(
        "--bench mme needs --questions (the eval_tool's folder of TASK.txt files) unless --answers is such a folder"
    )


def _score_mme(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    return {"scorer": _MME_SCORER, **mme.mme_scores(_mme_truth(args), answers)}


def _mme_image(root: Path, question: mme.MMEQuestion) -> str:
    # The release keeps some subtasks' images in an images/ subfolder, the others beside their .txt.
    nested = f"{question.task}/images/{question.image}"
    return nested if (root / nested).is_file() else f"{question.task}/{question.image}"


def _mme_questions(args: argparse.Namespace) -> list[Question]:
    root = Path(args.image_root)
    questions = mme.read_results_folder(single_path(args, "questions"))[0]
    return [Question(q.id, mme.llava_prompt(q.question), _mme_image(root, q)) for q in questions]


# --- MMBench -------------------------------------------------------------------------------------


def _score_mmbench(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    questions = mmbench.read_tsv(single_path(args, "questions"))
    prompt_file = getattr(args, "judge_prompt", None)
    templates = mmbench.reference_templates(prompt_file) if prompt_file and judge is not None else None
    metrics = mmbench.mmbench_scores(questions, answers, judge, templates, workers=args.judge_workers)
    if judge is None:
        return {"scorer": "rule-based (VLMEvalKit can_infer; no judge: unread answers are wrong)", **metrics}
    return {
        "scorer": f"rule-based (VLMEvalKit can_infer), then judge ({judge.model}) for unread answers",
        "judge_prompt": f"reference template from {prompt_file}"
        if templates is not None
        else "chip's own wording (give --judge-prompt multiple_choice.py for VLMEvalKit's)",
        **metrics,
    }


def _mmbench_row_id(row: dict) -> int | None:
    # VLMEvalKit names a row by its TSV "index"; LLaVA's answers call it question_id.
    if "question_id" in row or "index" not in row:
        return None
    try:
        return int(row["index"])
    except (TypeError, ValueError):
        return None


def _mmbench_questions(args: argparse.Namespace) -> list[Question]:
    path = single_path(args, "questions")
    questions = mmbench.read_tsv(path)
    return [
        Question(i, mmbench.llava_prompt(q), f"{path.name}#{i}", mmbench.image_of(q, questions))
        for i, q in sorted(questions.items())
    ]


# --- ScienceQA-IMG -------------------------------------------------------------------------------


def _score_scienceqa(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    problems, test_ids = scienceqa.read_problems(args.annotations)
    return {
        "scorer": "rule-based (LLaVA eval_science_qa.py reading of the option letter)",
        **scienceqa.scienceqa_scores(problems, test_ids, answers),
    }


def _scienceqa_questions(args: argparse.Namespace) -> list[Question]:
    path = single_path(args, "questions")
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected LLaVA's ScienceQA question list (llava_test_CQM-A.json)")
    return [Question(*scienceqa.llava_question(e, f"{path}: item {i}")) for i, e in enumerate(entries)]


# Each has only its reference's reading; `--reading corrected` is refused for them.
GENERAL_BENCHMARKS: tuple[Benchmark, ...] = tuple(
    replace(bench, kind="general", official_only=True)
    for bench in (
        Benchmark("mme", "question_id", (), _score_mme, _mme_questions, read_native=_mme_native),
        Benchmark(
            "mmbench", "question_id", ("questions",), _score_mmbench, _mmbench_questions, int, _mmbench_row_id
        ),
        Benchmark("scienceqa", "question_id", ("annotations",), _score_scienceqa, _scienceqa_questions),
    )
)
