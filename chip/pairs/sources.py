"""What `chip pairs` samples: prompts with their images, from an image folder or any dataset layout.

    items, skipped = folder_items("coco/val2014", prompts=DEFAULT_PROMPTS, seed=0)
    items, skipped = dataset_items("data/rlaif-v", prompts=None)   # the rows' own prompts

An item is one prompt with its images; it is sampled `--samples` times. Its id names it in every
file `chip pairs` writes (the image's path under the folder, or the dataset row's id), so a
restart, another batch size or another process finds the same work units. Each image also gets
the path it will have under the output folder's `images/`, so the pairs can be trained on with
the folder moved as a whole.

Unreadable images and bad dataset rows are skipped and counted (`Skipped`), never dropped
silently: the report lists them.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from chip.data import ImageProblem, ImageRef, load_preference_rows
from chip.data.images import check_image
from chip.data.messages import Message
from chip.errors import ConfigError, DataError

# chip's own wording of Object HalBench-style requests for a detailed description: long answers
# that name many objects, which is where object hallucination shows.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Describe this image in detail.",
    "Provide a thorough description of everything you can see in the image.",
    "What is in this picture? Describe it in as much detail as you can.",
    "Give a detailed account of the scene shown in the image.",
    "Describe the objects in this image and where they are.",
    "Write a long, detailed caption for this image.",
    "Explain in detail what this photo shows.",
    "Look at the image carefully and describe every part of it.",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_FORMAT_SUFFIX = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
}


@dataclass(frozen=True)
class PromptItem:
    """One prompt and its images, sampled `--samples` times."""

    id: str  # unique among the items: the image's relative path, or the dataset row's id
    prompt: str | list[Message]
    images: tuple[ImageRef, ...]
    image_names: tuple[str, ...]  # each image's path under the output's images/ folder


@dataclass
class Skipped:
    """Inputs left out, by reason, with the first few places (for the report)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {kind}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from `parts` that is the same in every process and on every machine."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def pick_prompt(prompts: Sequence[str], item_id: str, seed: int) -> str:
    """The prompt of one item: drawn from `prompts` by (seed, item id), so it never depends on order."""
    return prompts[stable_hash("prompt", seed, item_id) % len(prompts)]


def read_prompts(path: str | Path) -> tuple[str, ...]:
    """Prompts from a text file (one per non-empty line) or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: prompts file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            prompts = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
        if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise DataError(f"{path}: expected a JSON list of non-empty strings")
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise DataError(f"{path}: holds no prompt")
    return tuple(prompts)


def limit_items(items: list[PromptItem], limit: int | None, seed: int) -> list[PromptItem]:
    """`limit` items drawn at random (fixed by `seed`), kept in their order; all when `limit` is None."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    keep = set(random.Random(f"limit/{seed}").sample(range(len(items)), limit))
    return [item for k, item in enumerate(items) if k in keep]


def folder_items(
    folder: str | Path, prompts: Sequence[str], seed: int, limit: int | None = None
) -> tuple[list[PromptItem], Skipped]:
    """One item per image file under `folder` (recursively, in path order), each with a prompt of `prompts`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    paths = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not paths:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    items = []
    for path in paths:
        name = path.relative_to(folder).as_posix()
        ref = ImageRef(path=path.resolve())
        items.append(PromptItem(name, pick_prompt(prompts, name, seed), (ref,), (name,)))
    items = limit_items(items, limit, seed)
    return _readable(items)


def dataset_items(
    dataset: str,
    prompts: Sequence[str] | None,
    seed: int,
    limit: int | None = None,
    image_root: str | None = None,
    column_map: str | None = None,
    split: str | None = None,
) -> tuple[list[PromptItem], Skipped]:
    """One item per usable row of any layout `chip data check` reads: its prompt (or one of `prompts`)
    and its images. Rows without an image are skipped: a pair needs one."""
    examples, report = load_preference_rows(
        dataset,
        image_root=image_root,
        on_bad_row="skip",
        column_map=column_map,
        split=split,
        prompts_only=True,
        image_check="header",
    )
    skipped = Skipped()
    for bad in report.bad_rows:
        skipped.add(bad.kind, bad.location)
    root = Path(image_root).resolve() if image_root else _dataset_root(dataset)
    items = []
    for example in examples:
        prompt = pick_prompt(prompts, example.id, seed) if prompts else example.prompt
        names = tuple(_output_name(ref, root) for ref in example.images)
        items.append(PromptItem(example.id, prompt, tuple(example.images), names))
    return limit_items(items, limit, seed), skipped


def _dataset_root(dataset: str) -> Path:
    path = Path(dataset)
    return path.resolve() if path.is_dir() else path.resolve().parent


def _output_name(ref: ImageRef, root: Path) -> str:
    """Where an image goes under images/: its path under the dataset root, else a name from its content."""
    if ref.path is not None:
        if ref.path.is_relative_to(root):
            return ref.path.relative_to(root).as_posix()
        return f"{hashlib.blake2b(str(ref.path).encode(), digest_size=6).hexdigest()}-{ref.path.name}"
    digest = ref.key.removeprefix("bytes:")[:16]
    with Image.open(io.BytesIO(ref.data or b"")) as image:
        return digest + _FORMAT_SUFFIX.get(image.format or "", ".img")


def _readable(items: list[PromptItem]) -> tuple[list[PromptItem], Skipped]:
    """The items whose images open (header check, in threads); the others are counted."""

    def problem(item: PromptItem) -> ImageProblem | None:
        try:
            for ref in item.images:
                check_image(ref, mode="header")
        except ImageProblem as found:
            return found
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(problem, items))
    skipped = Skipped()
    kept = []
    for item, found in zip(items, problems):
        if found is None:
            kept.append(item)
        else:
            skipped.add(found.kind, item.id)
    return kept, skipped
