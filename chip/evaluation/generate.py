"""Answer benchmark questions with any `AutoModelForImageTextToText` model, resumably.

    from chip.evaluation.generate import GenerationSettings, generate_answers
    generate_answers("out/chip", questions, "answers.jsonl", image_root="val2014",
                     settings=GenerationSettings(batch_size=8, num_beams=3))

Answers are appended to a JSON Lines file as each batch finishes (flushed and fsynced), one row
per question with the prompt, the settings and the model's identity. A restart reads the file,
skips ids already answered and drops a last line torn by a kill, so an interrupted run loses at
most one batch and never duplicates an answer. Under `accelerate launch` each process answers the questions whose
id hashes to its rank (`chip.ranks`) into a part of its own, merged into the one-process file by
the main process at the end. Batches are left-padded, because generation
appends tokens on the right, and `eos_token_id`/`pad_token_id` are passed explicitly since many
checkpoints leave them unset in their generation config.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from chip.errors import ConfigError, DataError
from chip.files import append_text
from chip.modeling.errors import ModelError, one_line
from chip.ranks import current_ranks, default_device, merge_parts

if TYPE_CHECKING:
    from transformers import BatchFeature, LogitsProcessorList

    from chip.evaluation.registry import Question
    from chip.modeling import VLMAdapter

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; the defaults: greedy, 256 new tokens."""

    batch_size: int = 8  # questions per generate() call
    num_beams: int = 1  # 1 = greedy; the CHiP authors used 3 beams
    max_new_tokens: int = 256  # longest answer in tokens
    device: str | None = (
        None  # None: the launch's device for this process, else cuda when available, else cpu
    )
    dtype: str = "auto"  # "auto" keeps the checkpoint's dtype; or float32 / bfloat16 / float16

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_beams < 1 or self.max_new_tokens < 1:
            raise ConfigError("batch_size, num_beams and max_new_tokens must be at least 1")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {self.dtype!r}")

    def decoding(self) -> dict[str, Any]:
        """The settings saved with every answer (those that change what is generated)."""
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens, "do_sample": False}


def _base_and_adapter(model_path: str | Path, adapter: str | Path | None) -> tuple[str, str | None]:
    # A folder holding only a PEFT adapter names its base model in adapter_config.json.
    path = Path(model_path)
    if adapter is None and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ConfigError(
                f"{path}/adapter_config.json names no base_model_name_or_path; pass --model BASE --adapter {path}"
            )
        return str(base), str(path)
    return str(model_path), None if adapter is None else str(adapter)


def load_for_generation(
    model_path: str | Path, adapter: str | Path | None, settings: GenerationSettings
) -> tuple[torch.nn.Module, VLMAdapter, dict[str, Any]]:
    """The model in eval mode on its device, its prompt adapter, and an identity record for the answers."""
    from transformers import AutoModelForImageTextToText

    from chip.modeling import VLMAdapter
    from chip.modeling.checks import check_model_path

    base, adapter_path = _base_and_adapter(model_path, adapter)
    check_model_path(base)
    dtype = "auto" if settings.dtype == "auto" else _DTYPES[settings.dtype]
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype)
    if adapter_path is not None:
        from peft import PeftModel

        # Merged, the adapter costs nothing at generation time.
        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    model = model.to(settings.device or default_device()).eval()
    vlm = VLMAdapter.from_pretrained(base)
    # Generation appends on the right, so every prompt must end at the same position.
    vlm.tokenizer.padding_side = "left"
    identity = {
        "model": str(Path(base).resolve()) if Path(base).exists() else base,
        "adapter": adapter_path,
        "architecture": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    return model, vlm, identity


def read_answered(path: Path, id_field: str) -> tuple[set[str], dict[str, Any] | None]:
    """Ids already answered in `path` and the first row's run record, repairing a torn last line.

    A kill can leave the last line half-written; it is cut off (its question is asked again).
    Any other unreadable line is an error: the file is not ours to rewrite.
    """
    if not path.is_file():
        return set(), None
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    answered: set[str] = set()
    first: dict[str, Any] | None = None
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{number}: invalid JSON ({err.msg}); cannot resume from this file"
            ) from err
        if id_field not in row:
            raise DataError(f"{path}:{number}: field {id_field!r}: missing; cannot resume from this file")
        answered.add(str(row[id_field]))
        first = first or row
    return answered, first


def _batches(questions: Sequence[Question], size: int) -> Iterator[list[Question]]:
    # A batch never mixes questions with and without an image: the processor needs one or the other.
    batch: list[Question] = []
    for question in questions:
        if batch and (len(batch) == size or (batch[0].image is None) != (question.image is None)):
            yield batch
            batch = []
        batch.append(question)
    if batch:
        yield batch


def _load_image(root: Path, question: Question) -> Image.Image:
    path = root / str(question.image)
    try:
        source = path if question.image_data is None else io.BytesIO(base64.b64decode(question.image_data))
        with Image.open(source) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        where = path if question.image_data is None else question.image
        raise DataError(f"{where}: cannot read the image of question {question.id!r} ({err})") from err


def batch_inputs(
    model: torch.nn.Module,
    vlm: VLMAdapter,
    prompts: Sequence[str | list[dict]],
    images: Sequence[Sequence[Image.Image]] | None,
) -> BatchFeature:
    """Left-padded model inputs for prompts with their images (``images[i]`` for ``prompts[i]``), on
    the model's device and in its float type."""
    texts = [vlm.format_prompt(p, len(images[i]) if images else 0) for i, p in enumerate(prompts)]
    inputs = vlm.processor(
        images=[list(row) for row in images] if images else None,
        text=texts,
        padding=True,
        add_special_tokens=False,
        return_tensors="pt",
    )
    inputs = inputs.to(model.device)
    for key, value in inputs.items():  # processors may return another float type than the model's
        if torch.is_tensor(value) and value.is_floating_point():
            inputs[key] = value.to(model.dtype)
    return inputs


@torch.no_grad()
def generate_new_tokens(
    model: torch.nn.Module,
    vlm: VLMAdapter,
    inputs: BatchFeature,
    max_new_tokens: int,
    num_beams: int = 1,
    logits_processor: LogitsProcessorList | None = None,
) -> torch.Tensor:
    """The tokens `generate` appends to each row of ``inputs`` (B, new): greedy or beam search, after
    ``logits_processor`` (chip pairs' seeded sampler turns greedy decoding into exact sampling)."""
    try:
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=vlm.eos_token_id,
            pad_token_id=vlm.pad_token_id,
            logits_processor=logits_processor,
        )  # (B, P + new)
    except (torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # a family whose own generate cannot run (e.g. Llama-4 on transformers 5.24)
        raise ModelError(
            f"{type(model).__name__} cannot generate: {type(error).__name__}: {one_line(error)}"
        ) from error
    return output[:, inputs["input_ids"].shape[1] :]  # (B, new)


def generate_batch(
    model: torch.nn.Module,
    vlm: VLMAdapter,
    questions: Sequence[Question],
    image_root: Path,
    settings: GenerationSettings,
) -> list[str]:
    """Answers for one batch (all with images or all without), decoded without special tokens."""
    has_images = questions[0].image is not None
    images = [[_load_image(image_root, q)] for q in questions] if has_images else None
    inputs = batch_inputs(model, vlm, [q.prompt for q in questions], images)
    new_tokens = generate_new_tokens(model, vlm, inputs, settings.max_new_tokens, settings.num_beams)
    return [text.strip() for text in vlm.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_answers(
    model_path: str | Path,
    questions: Sequence[Question],
    answers_path: str | Path,
    image_root: str | Path = ".",
    settings: GenerationSettings | None = None,
    adapter: str | Path | None = None,
    id_field: str = "question_id",
    progress: bool = True,
) -> Path:
    """Answer every question not yet in `answers_path`, appending one row per answer.

    Rows: `{id_field: id, "prompt", "image", "answer", "model": {...}, "settings": {...}}`.
    Resuming with another model or other decoding settings is refused, since the file would
    mix two runs.
    """
    settings = settings or GenerationSettings()
    answers_path = Path(answers_path)
    ids = [str(q.id) for q in questions]
    if len(set(ids)) != len(ids):
        raise DataError("question ids are not unique; answers could not be matched back to questions")
    ranks = current_ranks()
    if ranks.is_main:  # the parts a killed launch left are answers too
        merge_parts(answers_path, ids, id_field)
    ranks.wait()
    answered, first = read_answered(answers_path, id_field)
    todo = [q for q in questions if str(q.id) not in answered and ranks.owns(str(q.id))]
    if todo:
        _answer(
            model_path,
            todo,
            answers_path,
            ranks.part(answers_path),
            first,
            image_root,
            settings,
            adapter,
            id_field,
            progress,
        )
    ranks.wait()
    if ranks.is_main:
        merge_parts(answers_path, ids, id_field)
    return answers_path


def _answer(
    model_path: str | Path,
    todo: Sequence[Question],
    answers_path: Path,
    part: Path,
    first: dict[str, Any] | None,
    image_root: str | Path,
    settings: GenerationSettings,
    adapter: str | Path | None,
    id_field: str,
    progress: bool,
) -> None:
    """Answer ``todo``, appending the rows to ``part`` (``answers_path`` itself in one process)."""
    model, vlm, identity = load_for_generation(model_path, adapter, settings)
    if first is not None and (first.get("model") != identity or first.get("settings") != settings.decoding()):
        raise ConfigError(
            f"{answers_path} holds answers from another model or other settings "
            f"({first.get('model')}, {first.get('settings')}); write to a new --answers file"
        )
    part.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(todo), unit="answer", disable=not progress) as bar:
        # closed on errors too: the error line must not land on the bar
        for batch in _batches(todo, settings.batch_size):
            texts = generate_batch(model, vlm, batch, Path(image_root), settings)
            rows = [
                {
                    id_field: question.id,
                    "prompt": question.prompt,
                    "image": question.image,
                    "answer": text,
                    "model": identity,
                    "settings": settings.decoding(),
                }
                for question, text in zip(batch, texts)
            ]
            append_text(part, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            bar.update(len(batch))
