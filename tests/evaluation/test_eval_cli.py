"""`chip eval` end to end on answer files: the two fixed API forms, reports, comparison, errors."""

from __future__ import annotations

import json

import pytest

from chip import cli as chip_cli
from chip.errors import ConfigError, DataError
from chip.evaluation.cli import main
from chip.evaluation.report import compare_table, load_runs, metrics_table
from chip.files import write_json_atomic


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_chair_api_form(tmp_path, coco_dir) -> None:
    """Truth (see the coco_dir fixture): image 1 = {person, dog, frisbee}, image 2 = {toilet, sink}.
    Answer 1: person, dog, [bench] -> 3 mentions, 1 hallucinated, covers 2 of 3.
    Answer 2: toilet (toilet seat), sink; the other "seat" is dropped -> 2 mentions, covers 2 of 2.
    CHAIR_i = 1/5, CHAIR_s = 1/2, recall = (2 + 2)/(3 + 2) = 4/5."""
    rows = [
        {"image_id": 1, "answer": "A man and his dog sit on a bench."},
        {"image_id": 2, "answer": "A toilet seat, a seat cover and a sink."},
    ]
    answers = write_jsonl(tmp_path / "a.jsonl", rows)
    out = tmp_path / "m.json"
    assert (
        main(["--bench", "chair", "--answers", answers, "--annotations", str(coco_dir), "--output", str(out)])
        == 0
    )
    m = json.loads(out.read_text())
    assert m["chair_i"] == pytest.approx(1 / 5)
    assert m["chair_s"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["benchmark"] == "chair" and "rule-based" in m["scorer"]


def test_pope_api_form_with_markdown(tmp_path) -> None:
    """q1 yes/"Yes." TP, q2 no/"No, there is not." TN, q3 no/"Yes, a dog." FP (split popular),
    q4 yes/"No." FN (popular): accuracy 2/4, yes_ratio 2/4; popular: accuracy 0, yes_ratio 1/2."""
    questions = [
        ("q1", "yes", "random", "Yes."),
        ("q2", "no", "random", "No, there is not."),
        ("q3", "no", "popular", "Yes, a dog."),
        ("q4", "yes", "popular", "No."),
    ]
    qfile = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {
                "question_id": q,
                "image": f"{q}.jpg",
                "text": "Is there a dog?",
                "label": lab,
                "category": split,
            }
            for q, lab, split, _ in questions
        ],
    )
    afile = write_jsonl(tmp_path / "a.jsonl", [{"question_id": q, "answer": a} for q, _, _, a in questions])
    out, md = tmp_path / "m.json", tmp_path / "m.md"
    argv = [
        "--bench",
        "pope",
        "--answers",
        afile,
        "--questions",
        qfile,
        "--output",
        str(out),
        "--markdown",
        str(md),
    ]
    assert main(argv) == 0
    m = json.loads(out.read_text())
    assert {k: m[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")} == pytest.approx(
        {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5}
    )
    assert m["splits"]["popular"]["accuracy"] == 0.0 and m["splits"]["random"]["accuracy"] == 1.0
    assert "| accuracy (%) ↑ | 50.0 |" in md.read_text()


def test_hallusion_without_judge_is_labelled_rule_based(tmp_path) -> None:
    """Two figures of one question: fig 0 (gt yes) answered "Yes" ✓, fig 1 (gt no) answered
    "Yes" ✗ -> aAcc 1/2, fAcc 1/2, qAcc 0; ids come from the reference's five key fields."""
    rows = [
        {
            "category": "VD",
            "subcategory": "map",
            "set_id": 0,
            "figure_id": f,
            "question_id": 0,
            "question": "Is it?",
            "gt_answer": gt,
            "model_prediction": "Yes",
        }
        for f, gt in ((0, "1"), (1, "0"))
    ]
    questions = tmp_path / "hb.json"
    questions.write_text(json.dumps(rows))
    out = tmp_path / "m.json"
    argv = [
        "--bench",
        "hallusionbench",
        "--answers",
        str(questions),
        "--questions",
        str(questions),
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    m = json.loads(out.read_text())
    assert m["scorer"].startswith("rule-based")
    assert (m["a_acc"], m["f_acc"], m["q_acc"]) == (0.5, 0.5, 0.0)


def test_mmhal_with_local_judge(tmp_path, fake_judge) -> None:
    """Judge rates 5 then 1: score 3.0, hallucination rate 1/2; judge stats land in the JSON."""
    replies = iter(["Rating: 5", "Rating: 1"])
    fake_judge.respond = lambda prompt: next(replies)
    template = tmp_path / "template.json"
    template.write_text(
        json.dumps(
            [
                {"question_type": "attribute", "question": "q0", "gt_answer": "g0", "image_content": ["a"]},
                {"question_type": "counting", "question": "q1", "gt_answer": "g1", "image_content": ["b"]},
            ]
        )
    )
    answers = write_jsonl(
        tmp_path / "a.jsonl", [{"question_id": 0, "answer": "x"}, {"question_id": 1, "answer": "y"}]
    )
    out = tmp_path / "m.json"
    argv = [
        "--bench",
        "mmhal",
        "--answers",
        answers,
        "--questions",
        str(template),
        "--output",
        str(out),
        "--judge-url",
        fake_judge.url,
        "--judge-model",
        "local",
        "--judge-workers",
        "1",
    ]
    assert main(argv) == 0
    m = json.loads(out.read_text())
    assert m["score"] == pytest.approx(3.0) and m["hallucination_rate"] == pytest.approx(0.5)
    assert m["judge"]["model"] == "local" and m["judge"]["requests"] == 2 and m["scorer"] == "judge (local)"


def test_mmhal_without_judge_refuses(tmp_path) -> None:
    with pytest.raises(ConfigError, match="judge"):
        main(["--bench", "mmhal", "--answers", "a", "--questions", "q", "--output", str(tmp_path / "m.json")])


def test_bad_inputs_name_file_line_and_field(tmp_path) -> None:
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"question_id": "q1", "image": "i", "text": "t", "label": "yes"}]
    )
    out = str(tmp_path / "m.json")
    base = ["--bench", "pope", "--questions", questions, "--output", out, "--answers"]
    with pytest.raises(DataError, match="missing.jsonl: file not found"):
        main([*base, str(tmp_path / "missing.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "q1", "answer": "yes"}\n{"question_id": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        main([*base, str(bad)])
    bad.write_text('{"question_id": "q1", "answer": "yes"}\n\n{"answer": "no"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: field 'question_id': missing"):
        main([*base, str(bad)])
    bad.write_text('{"question_id": "q1"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'answer': missing"):
        main([*base, str(bad)])
    assert not (tmp_path / "m.json").exists()


def test_chip_command_prints_one_line_error(tmp_path, capsys) -> None:
    code = chip_cli.main(
        [
            "eval",
            "--bench",
            "pope",
            "--answers",
            str(tmp_path / "none.jsonl"),
            "--questions",
            str(tmp_path / "q.jsonl"),
            "--output",
            str(tmp_path / "m.json"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("chip: error:") and "\n" not in err and "Traceback" not in err


def test_compare_runs_side_by_side(tmp_path, capsys) -> None:
    """chair_i 20% -> 10% is -10.0 points; recall 50% -> 60% is +10.0; counts are not shown."""
    base, chip = tmp_path / "base.json", tmp_path / "chip.json"
    write_json_atomic(base, {"benchmark": "chair", "chair_i": 0.2, "recall": 0.5, "n_mentions": 10})
    write_json_atomic(chip, {"benchmark": "chair", "chair_i": 0.1, "recall": 0.6, "n_mentions": 9})
    md = tmp_path / "cmp.md"
    assert main(["--compare", str(base), str(chip), "--markdown", str(md)]) == 0
    table = capsys.readouterr().out
    assert table == md.read_text()
    assert "| chair_i (%) ↓ | 20.0 | 10.0 (-10.0) |" in table
    assert "| recall (%) ↑ | 50.0 | 60.0 (+10.0) |" in table
    assert "n_mentions" not in table


def test_compare_reads_demo_results(tmp_path) -> None:
    results = tmp_path / "results.json"
    write_json_atomic(results, {"methods": {"base": {"chair_i": 0.3}, "chip": {"chair_i": 0.15}}, "seed": 0})
    runs = load_runs([results])
    assert [name for name, _ in runs] == ["base", "chip"]
    assert "| chair_i (%) ↓ | 30.0 | 15.0 (-15.0) |" in compare_table(runs)


def test_atomic_write_keeps_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_metrics_table_shows_metrics_not_counts() -> None:
    """MMHal: score and per-type means are plain numbers, the rate a percentage; n is a count."""
    table = metrics_table({"score": 3.0, "hallucination_rate": 0.5, "per_type": {"counting": 1.5}, "n": 2})
    assert "| score ↑ | 3.00 |" in table and "| hallucination_rate (%) ↓ | 50.0 |" in table
    assert "| per_type.counting | 1.50 |" in table and "| n |" not in table


def test_amber_through_the_cli(tmp_path) -> None:
    """Generative id 1 "A dog and a cat." with truth {dog}, hallu {cat}: 2 nouns, cat hallucinated
    -> CHAIR 1/2, Cover 1, Hal 1, Cog 1. Discriminative id 2 (truth no) answered "No." -> F1 1.
    AMBER score = ((1 - 1/2) + 1) / 2 = 0.75."""
    data = tmp_path / "amber"
    data.mkdir()
    (data / "annotations.json").write_text(
        json.dumps(
            [
                {"id": 1, "type": "generative", "truth": ["dog"], "hallu": ["cat"]},
                {"id": 2, "type": "discriminative-hallucination", "truth": "no"},
            ]
        )
    )
    (data / "relation.json").write_text(json.dumps({"dog": [], "cat": []}))
    (data / "safe_words.txt").write_text("")
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps([{"id": 1, "response": "A dog and a cat."}, {"id": 2, "response": "No."}]))
    out = tmp_path / "m.json"
    argv = ["--bench", "amber", "--answers", str(answers), "--annotations", str(data), "--output", str(out)]
    assert main([*argv, "--reading", "corrected"]) == 0
    m = json.loads(out.read_text())
    assert (m["chair"], m["cover"], m["hal"], m["cog"], m["f1"]) == pytest.approx((0.5, 1.0, 1.0, 1.0, 1.0))
    assert m["amber_score"] == pytest.approx(0.75) and m["reading"] == "corrected"

    # Official reading: "No." is not exactly "No", so it is no answer at all; every denominator
    # starts at 0.001 and numbers are rounded percentages: CHAIR round(100·1/2.001, 1) = 50.0,
    # Cover and Cog round(100·1/1.001, 1) = 99.9, Hal 100.0; accuracy 0/1.001 = 0.
    assert main(argv) == 0
    m = json.loads(out.read_text())
    assert (m["chair"], m["cover"], m["hal"], m["cog"]) == pytest.approx((0.5, 0.999, 1.0, 0.999))
    assert (m["accuracy"], m["f1"]) == (0.0, 0.0) and m["reading"] == "official"
    assert "no POS tagger" in m["noun_reading"] or "not installed" in m["noun_reading"]


def test_objhal_with_local_judge_follows_rlhfv(tmp_path, coco_dir, fake_judge) -> None:
    """Image 1 (truth person, dog, frisbee): the judge lists "man", "orange frisbee", "cup of coffee"
    -> person, frisbee, cup; cup is hallucinated. Image 2 (truth toilet, sink): "A toilet." has 2 words,
    so no judge call and no objects. CHAIR_i = 1/3, CHAIR_s = 1/2, refined = 1/1, recall = 2/5.
    The prompt goes out as the one, system, message."""
    listed = {
        "A man throws an orange frisbee next to a cup of coffee.": '["man", "orange frisbee", "cup of coffee"]'
    }
    fake_judge.respond = lambda prompt: next(v for k, v in listed.items() if k in prompt)
    answers = write_jsonl(
        tmp_path / "a.jsonl",
        [{"image_id": 1, "answer": next(iter(listed))}, {"image_id": 2, "answer": "A toilet."}],
    )
    out = tmp_path / "m.json"
    argv = [
        "--bench",
        "objhal",
        "--answers",
        answers,
        "--annotations",
        str(coco_dir),
        "--output",
        str(out),
        "--judge-url",
        fake_judge.url,
        "--judge-workers",
        "1",
    ]
    assert main(argv) == 0
    m = json.loads(out.read_text())
    assert (m["chair_i"], m["chair_s"], m["chair_s_refined"], m["recall"]) == pytest.approx(
        (1 / 3, 0.5, 1.0, 0.4)
    )
    assert len(fake_judge.requests) == 1 and m["n_unparseable"] == 0
    assert [msg["role"] for msg in fake_judge.requests[0]["messages"]] == ["system"]
    assert "RLHF-V" in m["scorer"] and m["reading"] == "official"


def test_image_root_takes_both_spellings() -> None:
    from chip.evaluation.cli import build_parser

    for option in ("--image-root", "--image_root"):
        assert build_parser().parse_args(["--bench", "pope", option, "imgs"]).image_root == "imgs"
