"""The benchmark registry behind `chip eval --bench NAME`: file formats in, pure scorers called.

Each entry knows which answer-row field holds its ids, which files it needs, how to turn them
into a scorer's inputs, and which questions to generate answers for. Adding a benchmark is one
`Benchmark(...)` in `BENCHMARKS` (the general-ability ones are in `general.py`); the CLI has no
per-benchmark branches.
"""

from __future__ import annotations

import argparse
from collections.abc import Hashable
from pathlib import Path

from chip.errors import ConfigError, DataError
from chip.evaluation import amber, amber_official, chair, hallusion, mmhal, objhal_judge, pope
from chip.evaluation.general import GENERAL_BENCHMARKS
from chip.evaluation.io import index_by, read_located_records, read_records
from chip.evaluation.judge import JudgeClient
from chip.evaluation.registry import Benchmark, Question, single_path

# How answers are read: as the reference scorers read them, or with chip's corrections.
READINGS = ("official", "corrected")

# Answer text may come under any of these names (ours, LLaVA's, AMBER's, MMHal's, HallusionBench's, CHAIR's).
ANSWER_FIELDS = ("answer", "text", "response", "model_answer", "model_prediction", "caption")


def answer_text(row: dict, path: str | Path, where: str) -> str:
    """The answer of one row under any of `ANSWER_FIELDS`, checked to be a string."""
    for field in ANSWER_FIELDS:
        if field in row:
            if not isinstance(row[field], str):
                raise DataError(f"{path}:{where}: field {field!r}: expected a string")
            return row[field]
    raise DataError(f"{path}:{where}: field 'answer': missing")


def read_answers(path: str | Path, bench: Benchmark) -> dict[Hashable, str]:
    """Answers keyed by `bench.id_field` (converted to `bench.id_type`); duplicates are errors."""
    if bench.read_native is not None:
        native = bench.read_native(Path(path))
        if native is not None:
            return native
    rows = read_located_records(path)
    if not rows:
        raise DataError(f"{path}: no answers")
    answers: dict[Hashable, str] = {}
    for where, row in rows:
        key = bench.row_id(row) if bench.row_id else None
        if key is None:
            if bench.id_field not in row:
                raise DataError(f"{path}:{where}: field {bench.id_field!r}: missing")
            try:
                key = bench.id_type(row[bench.id_field])
            except (TypeError, ValueError) as err:
                raise DataError(
                    f"{path}:{where}: field {bench.id_field!r}: {row[bench.id_field]!r} is not a valid id"
                ) from err
        if key in answers:
            raise DataError(f"{path}:{where}: field {bench.id_field!r}: duplicate id {key!r}")
        answers[key] = answer_text(row, path, where)
    return answers


# --- CHAIR / Object HalBench -------------------------------------------------------------------

_DESCRIBE = "Please describe this image in detail."


_CHAIR_SCORERS = {
    "official": "rule-based (utils/chair.py reading: NLTK word_tokenize, Pattern 3.6 singularize, reference "
    "synonyms.txt; recall as OPERA, refined CHAIR_s and avg_length as RLHF-V)",
    "corrected": "rule-based (chip's corrected COCO synonym table)",
}


def _score_chair(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    reader = chair.coco_reader(args.reading)
    truth = chair.load_coco_truth(args.annotations, image_ids=answers.keys(), vocab=reader)
    metrics = chair.chair_scores(answers, truth, reader)
    return {"scorer": _CHAIR_SCORERS[args.reading], **metrics}


def _score_objhal(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    if judge is None:
        return _score_chair(args, answers, judge)
    if args.reading != "official":
        raise ConfigError("--bench objhal with a judge follows RLHF-V's procedure; use --reading official")
    reader = chair.official_coco_reader()
    truth = chair.load_coco_truth(args.annotations, image_ids=answers.keys(), vocab=reader)
    prompt_file = getattr(args, "judge_prompt", None)
    template = objhal_judge.load_reference_prompt(prompt_file) if prompt_file else objhal_judge.PROMPT
    names, name_reading = objhal_judge.spacy_names()
    judged, unparseable = objhal_judge.judge_objects(
        answers,
        args.prompt or _DESCRIBE,
        reader,
        judge,
        template,
        names or objhal_judge.offline_names,
        workers=args.judge_workers,
    )
    return {
        "scorer": f"judge ({judge.model}) lists objects, then the reference CHAIR synonym filter (RLHF-V)",
        "judge_prompt": f"reference prompt from {prompt_file}"
        if prompt_file
        else "chip's own wording (give --judge-prompt eval_gpt_obj_halbench.py for RLHF-V's)",
        "object_names": name_reading,
        **chair.chair_scores(answers, truth, judged),
        "n_unparseable": unparseable,
    }


def _chair_questions(args: argparse.Namespace) -> list[Question]:
    rows = read_records(single_path(args, "questions"), required=["image_id", "image"])
    return [Question(int(r["image_id"]), r.get("text") or args.prompt or _DESCRIBE, r["image"]) for r in rows]


# --- POPE ----------------------------------------------------------------------------------------


def _pope_rows(args: argparse.Namespace) -> dict[str, dict]:
    rows: list[dict] = []
    files = [Path(p) for p in args.questions]
    for path in files:
        for row in read_records(path, required=["question_id", "image", "text", "label"]):
            row = {**row, "question_id": str(row["question_id"])}
            if len(files) > 1:
                row.setdefault("split", row.get("category") or path.stem)
            rows.append(row)
    return index_by(rows, "question_id", ", ".join(map(str, files)))


def _score_pope(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    rows = _pope_rows(args)
    labels = {k: r["label"] for k, r in rows.items()}
    splits = {k: r.get("split") or r.get("category") for k, r in rows.items()}
    scorer = {
        "official": "rule-based (POPE evaluate.py reading: text before the first '.', commas removed, "
        "space-separated 'No'/'no'/'not')",
        "corrected": "rule-based (first sentence no/not, any case, punctuation stripped)",
    }[args.reading]
    return {"scorer": scorer, **pope.pope_scores(answers, labels, splits, reading=args.reading)}


def _pope_questions(args: argparse.Namespace) -> list[Question]:
    return [Question(k, r["text"], r["image"]) for k, r in _pope_rows(args).items()]


# --- AMBER ---------------------------------------------------------------------------------------


def _score_amber(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    annotations = amber.load_amber_annotations(args.annotations)
    if args.reading == "corrected":
        return {
            "scorer": "rule-based (AMBER vocabulary, offline)",
            **amber.amber_scores(answers, annotations),
        }
    amber.check_answer_ids(answers, annotations)
    nouns, noun_reading = amber_official.reference_nouns()
    similar, similarity = amber_official.reference_similarity()
    scores = amber_official.amber_official_scores(
        answers, annotations, nouns, similar, noun_reading, similarity
    )
    return {"scorer": "rule-based (AMBER inference.py counting)", **scores}


def _amber_questions(args: argparse.Namespace) -> list[Question]:
    rows = read_records(single_path(args, "questions"), required=["id", "image", "query"])
    return [Question(int(r["id"]), r["query"], r["image"]) for r in rows]


# --- MMHal-Bench ---------------------------------------------------------------------------------


def _mmhal_rows(args: argparse.Namespace) -> dict[str, dict]:
    rows = read_records(single_path(args, "questions"), required=["question_type", "question", "gt_answer"])
    # The template has no id field; a row's id is its position, as in the reference scripts.
    return {str(i): row for i, row in enumerate(rows)}


def _score_mmhal(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    if judge is None:
        raise ConfigError("--bench mmhal needs a judge (--judge-url)")
    rows = _mmhal_rows(args)
    unknown = [k for k in answers if k not in rows]
    if unknown:
        raise DataError(f"{len(unknown)} answer(s) to unknown question ids, e.g. {unknown[:5]!r}")
    prompt_file = getattr(args, "judge_prompt", None)
    template = mmhal.load_reference_template(prompt_file) if prompt_file else None
    ratings = mmhal.judge_mmhal(
        answers, rows, judge, workers=args.judge_workers, reading=args.reading, template=template
    )
    types = {k: rows[k]["question_type"] for k in answers}
    return {
        "scorer": f"judge ({judge.model})",
        "judge_prompt": f"reference template from {prompt_file}"
        if template is not None
        else "chip's own wording of the rubric (give --judge-prompt eval_gpt4.py for the reference's)",
        "rating_parse": "eval_gpt4.py (exactly one 'rating: X'; else 0)"
        if args.reading == "official"
        else "last 'Rating: X'",
        **mmhal.mmhal_scores(ratings, types),
    }


def _mmhal_questions(args: argparse.Namespace) -> list[Question]:
    return [
        Question(k, r["question"], Path(str(r.get("image_src", ""))).name or None)
        for k, r in _mmhal_rows(args).items()
    ]


# --- HallusionBench ------------------------------------------------------------------------------


def _hallusion_rows(args: argparse.Namespace) -> dict[str, dict]:
    rows = read_records(
        single_path(args, "questions"), required=[*hallusion.KEY_FIELDS, "question", "gt_answer"]
    )
    return {hallusion.question_key(r): r for r in rows}


def _score_hallusion(args: argparse.Namespace, answers: dict, judge: JudgeClient | None) -> dict:
    rows = _hallusion_rows(args)
    unknown = [k for k in answers if k not in rows]
    if unknown:
        raise DataError(f"{len(unknown)} answer(s) to unknown question ids, e.g. {unknown[:5]!r}")
    if judge is None:
        correct = hallusion.rule_correctness(answers, rows)
        scorer = "rule-based (yes/no reading; offline fallback)"
    else:
        correct = hallusion.judge_correctness(answers, rows, judge, workers=args.judge_workers)
        scorer = f"judge ({judge.model})"
    metrics = hallusion.hallusion_scores(correct, rows)
    return {"scorer": scorer, **metrics, "n_unanswered": len(rows) - len(answers)}


def _hallusion_row_id(row: dict) -> str | None:
    # Result files of the reference scripts carry the five key fields instead of one id.
    return hallusion.question_key(row) if all(f in row for f in hallusion.KEY_FIELDS) else None


def _hallusion_questions(args: argparse.Namespace) -> list[Question]:
    # Rows with visual_input 0 are asked without an image, as the benchmark intends.
    return [
        Question(k, r["question"], r.get("filename") if str(r.get("visual_input", "1")) != "0" else None)
        for k, r in _hallusion_rows(args).items()
    ]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("chair", "image_id", ("annotations",), _score_chair, _chair_questions, int),
        Benchmark("objhal", "image_id", ("annotations",), _score_objhal, _chair_questions, int),
        Benchmark("pope", "question_id", ("questions",), _score_pope, _pope_questions),
        Benchmark("amber", "id", ("annotations",), _score_amber, _amber_questions, int),
        Benchmark("mmhal", "question_id", ("questions",), _score_mmhal, _mmhal_questions, needs_judge=True),
        Benchmark(
            "hallusionbench",
            "question_id",
            ("questions",),
            _score_hallusion,
            _hallusion_questions,
            row_id=_hallusion_row_id,
        ),
        *GENERAL_BENCHMARKS,
    )
}
