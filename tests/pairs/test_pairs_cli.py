"""`chip pairs` end to end on tiny captioners: COCO pairs, objects files, datasets, two rounds."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from chip.cli import main as chip_main
from chip.data.cli import check_main
from chip.evaluation.chair import official_coco_reader
from chip.pairs.sampling import SamplingSettings, sample_responses
from chip.pairs.sources import folder_items
from tests.pairs.conftest import (
    OBJECT_WORDS,
    PROMPT,
    SHOWN,
    TRUTH,
    image_name,
    scripted_judge,
    start_judge_server,
)
from tests.train_helpers import train_args

FAST = ["--samples", "6", "--max_new_tokens", "40", "--batch_size", "8"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def coco_pairs(model: Path, coco, output: Path, *extra: str) -> int:
    return chip_main(
        [
            "pairs",
            "--model",
            str(model),
            "--images",
            str(coco.images),
            "--annotations",
            str(coco.annotations),
            "--prompts",
            str(coco.prompts),
            "--output",
            str(output),
            *FAST,
            *extra,
        ]
    )


def truth_of(row: dict) -> frozenset[str]:
    return next(TRUTH[k] for k in TRUTH if image_name(k) == row["source_id"])


def hallucinated(text: str, truth: frozenset[str]) -> list[tuple[str, str]]:
    """The official CHAIR reading's mentions of `text` that are not in `truth`."""
    return [(word, cls) for word, cls in official_coco_reader().mentions(text) if cls not in truth]


def check_coco_rows(output: Path) -> list[dict]:
    """Every rejected holds >= 1 hallucinated object by the official reading, its segments hold exactly
    those (each segment read alone gives its hallucinated mention, in order), every chosen holds fewer."""
    found = rows(output / "pairs.jsonl")
    assert found, "the captioner hallucinates in some of its 24 samples, so some pair must form"
    for row in found:
        truth = truth_of(row)
        wrong = hallucinated(row["rejected"], truth)
        assert len(wrong) >= 1 and len(wrong) == row["rejected_hallucinations"]
        marked = [official_coco_reader().mentions(row["rejected"][s:e]) for s, e in row["rejected_segments"]]
        assert marked == [[mention] for mention in wrong]
        assert len(hallucinated(row["chosen"], truth)) == row["chosen_hallucinations"] < len(wrong)
        assert (output / row["images"][0]).is_file()
    return found


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_coco_pairs_end_to_end(family, captioner, coco, tmp_path, capsys) -> None:
    """24 samples of a captioner judged by the fixture's COCO annotations; the folder passes
    `chip data check`; the report counts every prompt once (paired or dropped, by reason). The same
    samples drawn one row at a time (other padding, other company in the batch) are the same bytes."""
    output = tmp_path / "round1"
    assert coco_pairs(captioner(family), coco, output) == 0
    assert "pairs from" in capsys.readouterr().out
    items, _ = folder_items(coco.images, [PROMPT], seed=0)
    one_by_one = tmp_path / "one_by_one.ndjson"
    settings = SamplingSettings(samples=6, max_new_tokens=40, batch_size=1)
    sample_responses(captioner(family), items, one_by_one, settings, progress=False)
    assert one_by_one.read_bytes() == (output / "samples.ndjson").read_bytes()
    responses = [json.loads(line)["response"] for line in one_by_one.read_text().splitlines()]
    assert len(set(responses)) > 6  # the samples vary
    found = check_coco_rows(output)
    assert check_main([str(output)]) == 0
    report = json.loads((output / "pairs_report.json").read_text())
    assert report["samples"]["drawn"] == 24 and report["pairs"]["kept"] == len(found)
    assert report["pairs"]["prompts_with_pairs"] + sum(report["dropped"]["prompts"].values()) == 4
    assert report["annotator"] == {"annotator": "coco", "vocabulary": "coco", "reading": "official"}
    markdown = (output / "pairs_report.md").read_text()
    assert "<b>" in markdown and found[0]["id"].replace("_", "\\_").replace("#", "\\#") in markdown


def test_objects_file_and_prompt_dataset(captioner, coco, tmp_path) -> None:
    """A prompt-only JSONL (any extra column) as the source and an objects file with a synonym as the
    annotator: "puppy" for dog, so only "cat", "man", "truck", "cup" ... can be hallucinated."""
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"id": f"q{k}", "question": "Describe the image.", "image": image_name(k), "topic": "x"}
            )
            + "\n"
            for k in TRUTH
        )
    )
    objects = tmp_path / "objects.json"
    objects.write_text(
        json.dumps(
            {
                image_name(1): ["dog", "frisbee"],
                image_name(2): ["cat", {"name": "couch", "synonyms": ["sofa"]}],
                image_name(3): ["car", "man"],
                image_name(4): ["pizza", "table"],
                "other.jpg": ["truck", "cup"],
            }
        )
    )
    output = tmp_path / "out"
    argv = [
        "pairs",
        "--model",
        str(captioner("llava")),
        "--dataset",
        str(data),
        "--image_root",
        str(coco.images),
        "--objects",
        str(objects),
        "--output",
        str(output),
        *FAST,
    ]
    assert chip_main(argv) == 0
    found = rows(output / "pairs.jsonl")
    assert found and check_main([str(output)]) == 0
    vocabulary = {"dog", "frisbee", "cat", "couch", "sofa", "car", "man", "pizza", "table", "truck", "cup"}
    present = {
        "q1": {"dog", "frisbee"},
        "q2": {"cat", "couch", "sofa"},
        "q3": {"car", "man"},
        "q4": {"pizza", "table"},
    }
    for row in found:
        marked = [row["rejected"][s:e].lower().rstrip("s") for s, e in row["rejected_segments"]]
        assert len(marked) == row["rejected_hallucinations"] >= 1
        assert all(word in vocabulary - present[row["source_id"]] for word in marked)
        assert row["images"] == [f"images/{image_name(int(row['source_id'][1:]))}"]


def test_two_rounds(captioner, coco, tmp_path) -> None:
    """Round 1 pairs -> `chip train` on the folder as written -> round 2 pairs from the trained model."""
    round1 = tmp_path / "round1"
    assert coco_pairs(captioner("llava"), coco, round1) == 0
    check_coco_rows(round1)
    trained = tmp_path / "runs" / "round1"
    train = train_args(captioner("llava"), round1, trained, per_device_train_batch_size=2, max_steps=2)
    assert chip_main(["train", *train]) == 0
    round2 = tmp_path / "round2"
    assert coco_pairs(trained, coco, round2) == 0
    report = json.loads((round2 / "pairs_report.json").read_text())
    assert report["model"]["model"] == str(trained.resolve()) and report["samples"]["drawn"] == 24
    check_coco_rows(round2)


def test_one_line_errors(captioner, coco, tmp_path, capsys) -> None:
    """No annotator, two sources, a file name without a COCO id: one line each, no traceback."""
    model = str(captioner("llava"))
    assert (
        chip_main(["pairs", "--model", model, "--images", str(coco.images), "--output", str(tmp_path / "a")])
        == 2
    )
    assert "give one annotator" in capsys.readouterr().err
    both = ["--images", str(coco.images), "--dataset", str(coco.prompts)]
    assert chip_main(["pairs", "--model", model, *both, "--output", str(tmp_path / "b")]) == 2
    assert "give one of --images DIR and --dataset DATASET" in capsys.readouterr().err
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "photo.jpg").write_bytes((coco.images / image_name(1)).read_bytes())
    argv = ["pairs", "--model", model, "--images", str(odd), "--annotations", str(coco.annotations)]
    assert chip_main([*argv, "--output", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no COCO image id" in err[0] and "photo.jpg" in err[0]


def test_judge_end_to_end(captioner, coco, tmp_path, capsys) -> None:
    """Judged by a served model (a scripted one on 127.0.0.1). First the endpoint is down: one line,
    the samples are kept. Then it is up: the run resumes without sampling again, and every rejected
    response's segments are exactly the object words the judge said are not in the image."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    output = tmp_path / "judged"
    argv = [
        "pairs",
        "--model",
        str(captioner("llava")),
        "--images",
        str(coco.images),
        "--prompts",
        str(coco.prompts),
        "--output",
        str(output),
        "--judge_retries",
        "1",
        "--judge_backoff",
        "0.01",
        *FAST,
    ]
    assert chip_main([*argv, "--judge", f"http://127.0.0.1:{port}/v1"]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress bars of sampling come first
    assert last.startswith("chip: error: judge ") and "Traceback" not in err
    assert "connection refused" in last and "0 of 24 samples judged so far are kept" in last
    sampled = (output / "samples.ndjson").read_bytes()
    assert sampled.count(b"\n") == 24

    server = start_judge_server()
    server.respond = scripted_judge(coco.images)
    try:
        assert chip_main([*argv, "--judge", server.url, "--judge_model", "judge-x"]) == 0
    finally:
        server.stop()
    assert (output / "samples.ndjson").read_bytes() == sampled
    found = rows(output / "pairs.jsonl")
    assert found and check_main([str(output)]) == 0
    for row in found:
        shown = SHOWN[next(k for k in TRUTH if image_name(k) == row["source_id"])]
        absent = {w for w in re.findall(r"[a-z]+", row["rejected"]) if w in OBJECT_WORDS - shown}
        assert {row["rejected"][s:e] for s, e in row["rejected_segments"]} == absent != set()
        chosen_absent = [w for w in re.findall(r"[a-z]+", row["chosen"]) if w in OBJECT_WORDS - shown]
        assert len(chosen_absent) == row["chosen_hallucinations"] < row["rejected_hallucinations"]
    report = json.loads((output / "pairs_report.json").read_text())
    assert report["annotator"]["annotator"] == "judge" and report["annotator"]["failed"] == 0
