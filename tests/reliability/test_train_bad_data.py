"""`chip train` on messy data: the same row/field/reason report as `chip data check`, never a traceback.

Reuses the broken-input corpus of ``tests/data`` (its `CASES` and images). With the default
``--on_bad_row error`` every case is refused with the rows `chip data check` names; with
``--on_bad_row skip`` training runs on the good rows only and the log says how many rows were
skipped and why. A prompt longer than ``max_length`` is the one problem only training can find
(it needs the processor), so it is reported by `chip train` alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chip.training.collate import ChipCollator
from tests.data.conftest import GOOD_ROW, make_images
from tests.data.test_broken_inputs import CASES, Case
from tests.reliability.conftest import Run, assert_one_line_error, log_history
from tests.train_helpers import train_args, write_pairs

# Pillow warns about the 10000×10000 image before chip.data refuses it (see tests/data).
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

MAX_LENGTH = 512  # train_args' default; the overlong prompt below is 600 byte-level tokens
LONG_PROMPT = "describe " * 67  # 603 characters -> 603 tokens with the byte-level tiny tokenizer
REPRESENTATIVE = (
    "missing_image_file",
    "truncated_jpeg",
    "text_named_jpg",
    "invalid_json_line",
    "non_utf8_bytes",
    "missing_chosen",
    "chosen_identical_to_rejected",
    "segment_out_of_range",
    "path_escapes_root",
    "duplicate_id",
)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests/data layout: ``<base>/outside.jpg`` and ``<base>/corpus/img/*`` (read-only)."""
    base = tmp_path_factory.mktemp("reliability_corpus")
    pixels = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(base / "outside.jpg")
    make_images(base / "corpus" / "img")
    return base / "corpus"


def write_rows(path: Path, rows: list[dict[str, Any] | bytes]) -> Path:
    """JSON Lines; a `bytes` row is written verbatim (broken lines)."""
    encoded = [row if isinstance(row, bytes) else json.dumps(row).encode() for row in rows]
    path.write_bytes(b"".join(line + b"\n" for line in encoded))
    return path


def good_rows(n: int) -> list[dict[str, Any]]:
    images = ["img/rgb.jpg", "img/red.png", "img/cmyk.jpg", "img/gray.png"]
    return [{**GOOD_ROW, "id": f"good{i}", "images": [images[i % len(images)]]} for i in range(n)]


def bad_row_lines(check: Run) -> list[str]:
    """The ``line N, field 'F': reason`` lines `chip data check` printed under "bad rows:"."""
    lines = check.out.splitlines()
    start, end = lines.index("bad rows:") + 1, lines.index("bad rows by reason:")
    return [line.strip() for line in lines[start:end]]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_train_refuses_each_broken_input_with_the_data_check_report(
    case: Case,
    corpus_root: Path,
    tmp_path: Path,
    tiny_model: Callable[..., Path],
    run_chip: Callable[..., Run],
) -> None:
    data = write_rows(corpus_root / f"train_{case.name}.jsonl", [GOOD_ROW, case.row(corpus_root, GOOD_ROW)])

    check = run_chip(["data", "check", data])
    assert check.code == 1
    expected = bad_row_lines(check)
    assert expected and all(line.startswith("line 2, ") for line in expected)

    message = assert_one_line_error(
        run_chip(["train", *train_args(tiny_model("llava"), data, tmp_path / "out")])
    )
    assert f"{data}: 1 of 2 rows are unusable" in message
    for line in expected:
        assert line in message  # the row, the field and the reason, word for word
    assert case.fragment in message
    assert not (tmp_path / "out" / "model.safetensors").exists()


def mixed_dataset(corpus_root: Path, name: str) -> tuple[Path, list[str]]:
    """4 good rows, the representative broken rows, then an overlong prompt; returns (path, good ids)."""
    cases = {case.name: case for case in CASES}
    broken = []
    for k, name_ in enumerate(REPRESENTATIVE):
        row = cases[name_].row(corpus_root, GOOD_ROW)
        if isinstance(row, dict) and name_ != "duplicate_id":
            row = {**row, "id": f"broken{k}"}
        broken.append(row)
    long_prompt = {**GOOD_ROW, "id": "long", "prompt": LONG_PROMPT}
    good = [dict(GOOD_ROW), *good_rows(4)]  # GOOD_ROW first: the duplicate_id row repeats its id
    rows = [*good[:2], *broken[:5], *good[2:4], *broken[5:], good[4], long_prompt]
    return write_rows(corpus_root / name, rows), [row["id"] for row in good]


def test_train_refuses_a_mixed_dataset_quoting_the_first_rows_of_the_check(
    corpus_root: Path, tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    data, good_ids = mixed_dataset(corpus_root, "mixed_refused.jsonl")
    total = len(good_ids) + len(REPRESENTATIVE) + 1

    check = run_chip(["data", "check", data])
    expected = bad_row_lines(check)
    assert check.code == 1 and len(expected) == len(REPRESENTATIVE)  # the overlong prompt needs the processor

    message = assert_one_line_error(
        run_chip(["train", *train_args(tiny_model("llava"), data, tmp_path / "out")])
    )
    assert f"{len(REPRESENTATIVE) + 1} of {total} rows are unusable: " in message
    quoted = message.split(" rows are unusable: ", 1)[1]
    assert quoted.startswith("; ".join(expected[:3]) + "; and 8 more problem(s)")


def test_train_with_skip_trains_on_the_good_rows_and_reports_what_it_skipped(
    corpus_root: Path,
    tmp_path: Path,
    tiny_model: Callable[..., Path],
    run_chip: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, good_ids = mixed_dataset(corpus_root, "mixed_skipped.jsonl")
    seen: list[str] = []
    build = ChipCollator.from_config

    def recording_collator(*args: Any, **kwargs: Any) -> Callable[[list], dict]:
        collator = build(*args, **kwargs)

        def collate(examples: list) -> dict:
            batch = collator(examples)
            seen.extend(batch["ids"])
            return batch

        return collate

    monkeypatch.setattr(ChipCollator, "from_config", recording_collator)
    out = tmp_path / "out"
    run = run_chip(
        [
            "train",
            *train_args(
                tiny_model("llava"), data, out, on_bad_row="skip", max_steps=3, per_device_train_batch_size=2
            ),
        ]
    )

    assert run.code == 0 and "Traceback" not in run.err, run.err[-2000:]
    assert set(seen) == set(good_ids)  # every good row trained on, nothing else
    assert len(log_history(out)) == 3
    [warning] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    total = len(good_ids) + len(REPRESENTATIVE) + 1
    assert warning.startswith(f"skipped {len(REPRESENTATIVE) + 1} of {total} rows of {data} (")
    for kind in (
        "image_missing",
        "image_corrupt",
        "image_not_an_image",
        "invalid_json",
        "invalid_utf8",
        "missing_field",
        "identical_responses",
        "bad_segments",
        "image_outside_root",
        "duplicate_id",
        "prompt_too_long",
    ):
        assert f"1 {kind}" in warning
    assert "line 3, field 'images[0]': image file not found" in warning and "and 6 more" in warning


def test_overlong_prompt_is_found_by_train_not_by_check(
    corpus_root: Path, tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    """Only the processor knows a prompt's length with its image tokens: `chip data check` passes it,
    `chip train` names it."""
    data = write_rows(
        corpus_root / "overlong.jsonl", [GOOD_ROW, {**GOOD_ROW, "id": "long", "prompt": LONG_PROMPT}]
    )

    assert run_chip(["data", "check", data]).code == 0
    message = assert_one_line_error(
        run_chip(["train", *train_args(tiny_model("llava"), data, tmp_path / "out")])
    )
    assert "line 2, field 'prompt': the prompt takes " in message
    assert f"leaving no room for a response within max_length={MAX_LENGTH}" in message


@pytest.mark.parametrize("field", ["prompt", "chosen"])
def test_special_token_text_in_a_row_never_crashes_training(
    field: str, tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    """Scraped text can hold ``<image>``: a response learns it as text, a prompt's row is reported.

    In a prompt the processor would read the text as a real image placeholder, so the row is bad
    (and the default ``on_bad_row: error`` refuses the run in one line); in a response it is text.
    """
    data = write_pairs_with(tmp_path, field, " <image>")
    run = run_chip(["train", *train_args(tiny_model("llava"), data, tmp_path / "out", max_steps=1)])
    assert "Traceback" not in run.err
    if field == "chosen":
        assert run.code == 0, run.err
    else:
        assert run.code != 0 and len(run.error_lines) == 1, run.err
        assert "line 2, field 'prompt'" in run.error_lines[0] and "special token" in run.error_lines[0]


def write_pairs_with(tmp_path: Path, field: str, suffix: str) -> Path:
    """tests/train_helpers pairs with ``suffix`` appended to ``field`` of the second row."""
    data = write_pairs(tmp_path / "data", n=4)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[1][field] += suffix
    return write_rows(data, rows)
