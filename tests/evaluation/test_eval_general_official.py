"""MME, MMBench and ScienceQA-IMG against their reference scorers' own output.

Each folder under data/official_{mme,mmbench,scienceqa}/ holds a fixture of awkward answers and
`expected.json`: what the reference code returned and printed on it (MME's eval_tool
calculation.py, VLMEvalKit's MMBench evaluation, LLaVA's eval_science_qa.py), answer by answer
where the reference exposes a reading. The folders' README files say how they were produced.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chip.evaluation import mmbench, mme, scienceqa
from chip.evaluation.cli import main as eval_main

DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-6
# VLMEvalKit's report_acc prints the six MMBench l2-categories abbreviated.
L2_ABBREVIATIONS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}


def folders(name: str) -> list[Path]:
    found = sorted(p.parent for p in (DATA / name).glob("*/expected.json"))
    assert found, f"no fixture under data/{name}"
    return found


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def expected(folder: Path) -> dict:
    return json.loads((folder / "expected.json").read_text(encoding="utf-8"))


# --- MME -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", folders("official_mme"), ids=lambda p: p.name)
def test_mme_readings_and_scores_match_calculation_py(folder) -> None:
    want = expected(folder)
    assert len(want["answers"]) >= 60
    questions, _ = mme.read_results_folder(folder / "questions")
    answers = {row["question_id"]: row["answer"] for row in jsonl(folder / "answers.jsonl")}
    assert [q.id for q in questions] == [f"{a['task']}/{a['image']}/{a['question']}" for a in want["answers"]]
    # The JSON Lines answers still hold their line breaks; the reference read them deleted.
    assert [mme.read_answer(answers[q.id]) for q in questions] == [a["reading"] for a in want["answers"]]
    for source in ("jsonl", "results"):
        if source == "jsonl":
            metrics = mme.mme_scores(questions, answers)
        else:
            metrics = mme.mme_scores(*mme.read_results_folder(folder / "results"))
        assert metrics["perception"] == pytest.approx(want["perception"], abs=TOLERANCE)
        assert metrics["cognition"] == pytest.approx(want["cognition"], abs=TOLERANCE)
        for task, reference in want["tasks"].items():
            got = metrics["tasks"][task]
            assert got["accuracy"] == pytest.approx(reference["acc"], abs=TOLERANCE), task
            assert got["accuracy_plus"] == pytest.approx(reference["acc_plus"], abs=TOLERANCE), task
            assert got["score"] == pytest.approx(reference["score"], abs=TOLERANCE), task
            assert got["n_other"] == reference["other_num"], task


@pytest.mark.parametrize("folder", folders("official_mme"), ids=lambda p: p.name)
def test_mme_cli_reads_the_results_layout_and_answer_files_alike(folder, tmp_path) -> None:
    want = expected(folder)
    eval_main(["--bench", "mme", "--answers", str(folder / "results"), "--output", str(tmp_path / "a.json")])
    eval_main(
        [
            "--bench",
            "mme",
            "--answers",
            str(folder / "answers.jsonl"),
            "--questions",
            str(folder / "questions"),
            "--output",
            str(tmp_path / "b.json"),
        ]
    )
    for name in ("a.json", "b.json"):
        metrics = json.loads((tmp_path / name).read_text())
        assert metrics["kind"] == "general" and metrics["reading"] == "official"
        assert metrics["perception"] == pytest.approx(want["perception"], abs=TOLERANCE)
        assert metrics["cognition"] == pytest.approx(want["cognition"], abs=TOLERANCE)
        assert metrics["n_unanswered"] == 0 and metrics["tasks_missing"] == []


# --- MMBench -------------------------------------------------------------------------------------


def mmbench_inputs(folder: Path) -> tuple[dict, dict[int, str]]:
    questions = mmbench.read_tsv(folder / "questions.tsv")
    answers = {row["question_id"]: row["answer"] for row in jsonl(folder / "answers.jsonl")}
    return questions, answers


def check_report(metrics: dict, report: dict) -> None:
    """chip's accuracy, per l2-category and per category, against VLMEvalKit's report_acc table."""
    assert report["split"] == ["dev"]
    assert metrics["accuracy"] == pytest.approx(report["Overall"][0], abs=TOLERANCE)
    for name, value in metrics["l2_categories"].items():
        assert value["accuracy"] == pytest.approx(report[L2_ABBREVIATIONS[name]][0], abs=TOLERANCE), name
    for name, value in metrics["categories"].items():
        assert value["accuracy"] == pytest.approx(report[name][0], abs=TOLERANCE), name
    assert len(metrics["l2_categories"]) + len(metrics["categories"]) == len(report) - 2


@pytest.mark.parametrize("folder", folders("official_mmbench"), ids=lambda p: p.name)
def test_mmbench_readings_match_can_infer(folder) -> None:
    want = expected(folder)
    questions, answers = mmbench_inputs(folder)
    assert len(answers) >= 60
    assert {str(i): mmbench.read_back(a) for i, a in answers.items()} == want["read_back"]
    got = {
        str(i): mmbench.read_choice(mmbench.read_back(a), questions[i].options) for i, a in answers.items()
    }
    assert got == want["prefetch"]


@pytest.mark.parametrize("folder", folders("official_mmbench"), ids=lambda p: p.name)
def test_mmbench_without_a_judge_matches_exact_matching(folder) -> None:
    want = expected(folder)["exact_matching"]
    questions, answers = mmbench_inputs(folder)
    groups = mmbench.circular_groups(questions, answers)
    assert {str(g.index): int(g.hit) for g in groups} == want["hits"]
    check_report(mmbench.mmbench_scores(questions, answers), want["report"])


@pytest.mark.parametrize("folder", folders("official_mmbench"), ids=lambda p: p.name)
def test_mmbench_judge_fallback_matches_the_reference(folder, fake_judge, tmp_path) -> None:
    """The same stand-in judge as the reference run (replies from judge.json, looked up by the one
    listed prediction the prompt contains, one reply per attempt; "Z" otherwise), served over HTTP
    to chip's client: the same copies reach it, as often, and the same questions hold."""
    want = expected(folder)["judge"]
    replies = json.loads((folder / "judge.json").read_text(encoding="utf-8"))
    calls: dict[str, int] = {}

    def respond(prompt: str) -> str:
        keys = [k for k in replies if k in prompt]
        assert len(keys) <= 1, keys
        if not keys:
            return "Z"
        calls[keys[0]] = calls.get(keys[0], 0) + 1
        return replies[keys[0]][calls[keys[0]] - 1]

    fake_judge.respond = respond
    out = tmp_path / "m.json"
    eval_main(
        [
            "--bench",
            "mmbench",
            "--answers",
            str(folder / "answers.jsonl"),
            "--questions",
            str(folder / "questions.tsv"),
            "--judge-url",
            fake_judge.url,
            "--judge-workers",
            "1",
            "--output",
            str(out),
        ]
    )
    metrics = json.loads(out.read_text())
    check_report(metrics, want["report"])
    assert calls == want["calls"]
    assert metrics["n_judge_failed"] == 0 and metrics["judge"]["failed"] == 0


# --- ScienceQA-IMG -------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", folders("official_scienceqa"), ids=lambda p: p.name)
def test_scienceqa_letters_and_accuracy_match_eval_science_qa(folder, tmp_path) -> None:
    want = expected(folder)
    problems, test_ids = scienceqa.read_problems(folder)
    answers = {row["question_id"]: row["text"] for row in jsonl(folder / "answers.jsonl")}
    assert len(answers) >= 60
    for pid, reference in want["answers"].items():
        letter = scienceqa.read_letter(answers[pid]) if pid in answers else None
        assert (letter or "FAILED") == reference["parsed"], (pid, answers.get(pid))
        assert scienceqa.choice_index(letter, problems[pid].n_choices) == reference["choice_index"], pid
    out = tmp_path / "m.json"
    eval_main(
        [
            "--bench",
            "scienceqa",
            "--answers",
            str(folder / "answers.jsonl"),
            "--annotations",
            str(folder),
            "--output",
            str(out),
        ]
    )
    metrics = json.loads(out.read_text())
    assert metrics["accuracy"] == pytest.approx(want["accuracy"], abs=TOLERANCE)
    assert metrics["img_accuracy"] == pytest.approx(want["img_accuracy"], abs=TOLERANCE)
    assert (metrics["n"], metrics["n_img"]) == (want["total"], want["img_total"])
