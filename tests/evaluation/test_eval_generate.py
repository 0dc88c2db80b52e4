"""Generation on tiny models: batching, 50 questions end to end, interruption and resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chip.errors import ConfigError
from chip.evaluation import generate as generate_module
from chip.evaluation.benchmarks import Question
from chip.evaluation.cli import main
from chip.evaluation.generate import GenerationSettings, generate_answers

FAST = GenerationSettings(batch_size=4, max_new_tokens=4)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 256, size=(32 + 8 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
    return root


def questions(n: int) -> list[Question]:
    # Prompts of different lengths, so batches really are padded.
    return [Question(f"q{i}", "Is there a dog in the image?" * (1 + i % 3), f"{i % 4}.png") for i in range(n)]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_batched_answers_equal_one_at_a_time(family, tiny_model, image_root, tmp_path) -> None:
    """Left padding must not change greedy answers: batch 3 == batch 1, question by question."""
    model = tiny_model(family)
    qs = questions(6) + [Question("text-only", "Is the sky blue?", None)]
    one = generate_answers(
        model,
        qs,
        tmp_path / "one.jsonl",
        image_root,
        GenerationSettings(batch_size=1, max_new_tokens=6),
        progress=False,
    )
    three = generate_answers(
        model,
        qs,
        tmp_path / "three.jsonl",
        image_root,
        GenerationSettings(batch_size=3, max_new_tokens=6),
        progress=False,
    )
    assert [r["answer"] for r in rows(one)] == [r["answer"] for r in rows(three)]
    assert [r["question_id"] for r in rows(three)] == [q.id for q in qs]


def test_fifty_questions_end_to_end(tiny_model, image_root, tmp_path) -> None:
    """`chip eval --bench pope --model ...`: 50 questions generated, saved with prompt, settings and
    model identity, then scored."""
    qfile = tmp_path / "pope.jsonl"
    qfile.write_text(
        "".join(
            json.dumps(
                {
                    "question_id": i,
                    "image": f"{i % 4}.png",
                    "text": "Is there a cat in the image?",
                    "label": "yes" if i % 2 else "no",
                    "category": "random",
                }
            )
            + "\n"
            for i in range(50)
        )
    )
    out = tmp_path / "m.json"
    argv = [
        "--bench",
        "pope",
        "--model",
        str(tiny_model("llava")),
        "--questions",
        str(qfile),
        "--image-root",
        str(image_root),
        "--output",
        str(out),
        "--batch-size",
        "10",
        "--max-new-tokens",
        "4",
    ]
    assert main(argv) == 0
    answers = rows(tmp_path / "m.answers.jsonl")
    ids = [r["question_id"] for r in answers]
    assert len(ids) == 50 and set(ids) == {str(i) for i in range(50)}
    first = answers[0]
    assert first["prompt"] == "Is there a cat in the image?" and first["image"] == "0.png"
    assert first["settings"] == {"num_beams": 1, "max_new_tokens": 4, "do_sample": False}
    assert first["model"]["architecture"] == "LlavaForConditionalGeneration"
    metrics = json.loads(out.read_text())
    assert metrics["n_answers"] == 50 and 0.0 <= metrics["accuracy"] <= 1.0


def test_interrupted_run_resumes_without_duplicates_or_losses(
    tiny_model, image_root, tmp_path, monkeypatch
) -> None:
    """Ctrl-C during the third batch: two batches (8 answers) are on disk; the restart answers the
    other 12 and the result equals an uninterrupted run."""
    model, qs = tiny_model("llava"), questions(20)
    reference = rows(generate_answers(model, qs, tmp_path / "ref.jsonl", image_root, FAST, progress=False))

    real, calls = generate_module.generate_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_module, "generate_batch", interrupted)
    path = tmp_path / "answers.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_answers(model, qs, path, image_root, FAST, progress=False)
    assert len(rows(path)) == 8
    monkeypatch.setattr(generate_module, "generate_batch", real)

    generate_answers(model, qs, path, image_root, FAST, progress=False)
    assert rows(path) == reference


def test_torn_last_line_is_repaired(tiny_model, image_root, tmp_path) -> None:
    """A kill in the middle of a write leaves half a line: it is cut and its question re-asked."""
    model, qs = tiny_model("llava"), questions(6)
    path = generate_answers(model, qs, tmp_path / "a.jsonl", image_root, FAST, progress=False)
    complete = path.read_text()
    lines = complete.splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:25])
    generate_answers(model, qs, path, image_root, FAST, progress=False)
    assert path.read_text() == complete


def test_killed_process_resumes(tiny_model, image_root, tmp_path) -> None:
    """SIGKILL a real generation process once some answers are on disk; the restart completes the
    file with every question answered exactly once."""
    model, path = tiny_model("llava"), tmp_path / "a.jsonl"
    n = 40
    script = (
        "import sys; from chip.evaluation.benchmarks import Question;"
        "from chip.evaluation.generate import GenerationSettings, generate_answers;"
        f"qs = [Question(f'q{{i}}', 'Is there a dog in the image?' * (1 + i % 3), f'{{i % 4}}.png') for i in range({n})];"
        f"generate_answers(sys.argv[1], qs, sys.argv[2], sys.argv[3], GenerationSettings(batch_size=1, max_new_tokens=32), progress=False)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(model), str(path), str(image_root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while (not path.exists() or path.read_text().count("\n") < 2) and time.monotonic() < deadline:
        assert child.poll() is None, "the generation process ended before it could be interrupted"
        time.sleep(0.05)
    assert child.poll() is None, "the generation process finished before it could be interrupted"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_before = len(rows(path)) if path.read_text().endswith("\n") else path.read_text().count("\n")
    assert 2 <= done_before < n

    generate_answers(
        model,
        questions(n),
        path,
        image_root,
        GenerationSettings(batch_size=8, max_new_tokens=32),
        progress=False,
    )
    ids = [r["question_id"] for r in rows(path)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n)) and len(ids) == len(set(ids))


def test_resume_refuses_other_settings(tiny_model, image_root, tmp_path) -> None:
    model = tiny_model("llava")
    path = generate_answers(model, questions(2), tmp_path / "a.jsonl", image_root, FAST, progress=False)
    with pytest.raises(ConfigError, match="another model or other settings"):
        generate_answers(
            model, questions(3), path, image_root, GenerationSettings(max_new_tokens=5), progress=False
        )


def test_adapter_folder_is_loaded_on_its_base(tiny_model, image_root, tmp_path) -> None:
    """A folder holding only a LoRA adapter is resolved to its base model; the identity records both."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = tiny_model("llava")
    lora = get_peft_model(
        AutoModelForImageTextToText.from_pretrained(base),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    lora.peft_config["default"].base_model_name_or_path = str(base)
    lora.save_pretrained(tmp_path / "adapter")
    path = generate_answers(
        tmp_path / "adapter", questions(2), tmp_path / "a.jsonl", image_root, FAST, progress=False
    )
    identity = rows(path)[0]["model"]
    assert identity["model"] == str(Path(base).resolve()) and identity["adapter"] == str(tmp_path / "adapter")
