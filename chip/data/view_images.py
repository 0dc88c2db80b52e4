"""The pictures of `chip data view`: thumbnails of the images, and the corrupted image as training sees it.

Thumbnails are small JPEGs named by a hash of the image's source (path, size and modification
time, or the inline bytes), so a second run over the same data, or over other pages of it, reuses
them. JPEG files are decoded at a reduced scale (Pillow's draft mode), which is most of the cost.

The corrupted image comes from the training collator itself (`chip.training.collate.ChipCollator`,
the same settings as `chip train`): its ``corrupt`` rows hold the processor's normalised pixel
tensor after the corruption, seeded by the run seed and the example id. `pixel_tiles` undoes the
processor's normalisation (``x · std + mean``, then ``/ rescale_factor``), rounds to 8 bits and
undoes its layout: one tile per image for LLaVA-style ``(n, 3, H, W)``, every tile of LLaVA-NeXT
or Idefics3 sub-images ``(…, 3, H, W)``, and Qwen-VL's flat patches ``(patches, C·T·p·p)`` back
into one picture per temporal frame. The tiles are written as PNG, so the page shows exactly those
8-bit pixels. `add_pictures` puts both, and the original files' URLs, into the page's rows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from urllib.request import pathname2url

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from chip.data.images import ImageProblem, ImageRef, to_rgb
from chip.data.rows import PreferenceExample
from chip.data.view_rows import ViewRow
from chip.errors import ChipError
from chip.files import write_atomic

# Longest side of a thumbnail in pixels (shown at up to 160 CSS pixels).
THUMB_SIDE = 192
THUMB_QUALITY = 80


def thumbnail_name(ref: ImageRef) -> str:
    """File name of ``ref``'s thumbnail: changes when the file is replaced or edited."""
    if ref.path is not None:
        try:
            stat = ref.path.stat()
            source = f"{ref.key}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            source = ref.key
    else:
        source = ref.key
    return hashlib.blake2b(source.encode(), digest_size=12).hexdigest() + ".jpg"


def write_thumbnail(ref: ImageRef, folder: Path) -> str:
    """Write ``ref``'s thumbnail into ``folder`` unless it is there; its file name, or `ImageProblem`."""
    name = thumbnail_name(ref)
    target = folder / name
    if target.exists():
        return name
    with ref.open() as image:
        image.draft(None, (2 * THUMB_SIDE, 2 * THUMB_SIDE))  # JPEG: decode at 1/2..1/8 scale
        try:
            image.load()
            rgb = to_rgb(image)
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageProblem("image_corrupt", f"image {ref.describe()} cannot be decoded: {err}") from None
    rgb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BICUBIC, reducing_gap=2.0)
    write_atomic(target, lambda tmp: rgb.save(tmp, "JPEG", quality=THUMB_QUALITY))
    return name


def write_thumbnails(
    refs: Iterable[ImageRef], folder: Path, workers: int | None = None
) -> dict[str, str | ImageProblem]:
    """Thumbnails of the distinct images among ``refs``, in threads: image key -> file name or problem."""
    unique = {ref.key: ref for ref in refs}

    def make(ref: ImageRef) -> str | ImageProblem:
        try:
            return write_thumbnail(ref, folder)
        except ImageProblem as problem:
            return problem

    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        return dict(zip(unique, pool.map(make, unique.values())))


def pixel_tiles(inputs: dict[str, Any], pixel_key: str, image_processor: Any) -> list[tuple[str, np.ndarray]]:
    """The pictures of one example's pixel tensor: ``(label, (H, W, 3) uint8)`` per tile.

    ``inputs`` are one example's processor outputs (``pixel_values`` and, for Qwen-VL,
    ``image_grid_thw``); the processor's ``image_mean``, ``image_std`` and ``rescale_factor``
    undo its normalisation. Raises ValueError for a layout that is not a picture.
    """
    pixels = inputs[pixel_key].detach().to("cpu").double()
    if "image_grid_thw" in inputs:
        grids = inputs["image_grid_thw"].tolist()
        frames = _unpatchify(pixels, grids, image_processor)
        labels = [
            f"image {i + 1}, frame {t + 1}/{len(f)}" for i, f in enumerate(frames) for t in range(len(f))
        ]
        tiles = [frame for image_frames in frames for frame in image_frames]
    elif pixels.dim() >= 3 and pixels.shape[-3] == 3:
        tiles = list(pixels.reshape(-1, *pixels.shape[-3:]))
        per_example = int(np.prod(pixels.shape[1:-3])) if pixels.dim() > 4 else 1
        labels = [
            f"image {k // per_example + 1}, tile {k % per_example + 1}/{per_example}"
            if per_example > 1
            else f"image {k + 1}"
            for k in range(len(tiles))
        ]
        if pixels.dim() == 5 and pixels.shape[0] == 1:  # Idefics3: (1, images·tiles, 3, H, W)
            labels = [f"tile {k + 1}/{len(tiles)}" for k in range(len(tiles))]
    else:
        raise ValueError(f"a pixel tensor of shape {tuple(pixels.shape)} is not a layout chip can show")
    return [(label, _denormalise(tile, image_processor)) for label, tile in zip(labels, tiles)]


def _denormalise(tile: torch.Tensor, image_processor: Any) -> np.ndarray:
    """(3, H, W) normalised float64 -> (H, W, 3) uint8, the inverse of rescale then normalise."""
    values = tile
    if getattr(image_processor, "do_normalize", True):
        mean = _per_channel(image_processor.image_mean)
        std = _per_channel(image_processor.image_std)
        values = values * std + mean
    if getattr(image_processor, "do_rescale", True):
        values = values / float(image_processor.rescale_factor)
    array = values.permute(1, 2, 0).numpy()  # (H, W, 3)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _per_channel(value: Any) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64).reshape(-1, 1, 1)  # (3 or 1, 1, 1) over (3, H, W)


def _unpatchify(
    pixels: torch.Tensor, grids: list[list[int]], image_processor: Any
) -> list[list[torch.Tensor]]:
    """Qwen-VL flat patches ``(Σ t·h·w, C·T·p·p)`` -> per image, its frames ``(C, h·p, w·p)``.

    Row order of the patches is (t, h/m, w/m, m, m) and each row is (C, T, p, p), m the merge size.
    """
    patch = int(image_processor.patch_size)
    temporal = int(image_processor.temporal_patch_size)
    merge = int(image_processor.merge_size)
    channels = pixels.shape[1] // (temporal * patch * patch)
    images, start = [], 0
    for t, h, w in grids:
        rows = pixels[start : start + t * h * w]
        start += t * h * w
        grid = rows.reshape(t, h // merge, w // merge, merge, merge, channels, temporal, patch, patch)
        # -> (t, T, C, h/m, m, p, w/m, m, p): frames of whole pictures
        grid = grid.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(t * temporal, channels, h * patch, w * patch)
        images.append(list(grid))
    return images


@dataclass
class CorruptionSettings:
    """The settings of `chip train` that decide the corrupted image and the derived segments."""

    model: str
    corruption: str = "diffusion"
    noise_step: int = 500
    seed: int = 42
    max_length: int = 2048
    segment_min_match: int = 3
    mark_insertions: bool = False


class TrainingView:
    """What the training collator makes of an example: its corrupted tiles and its changed segments."""

    def __init__(self, settings: CorruptionSettings, pool: list[PreferenceExample]):
        from chip.modeling import VLMAdapter
        from chip.training.collate import ChipCollator

        self.adapter = VLMAdapter.from_pretrained(settings.model)
        self.collator = ChipCollator(
            adapter=self.adapter,
            corruption=settings.corruption,
            noise_step=settings.noise_step,
            seed=settings.seed,
            max_length=settings.max_length,
            score_corrupt=True,
            segment_min_match=settings.segment_min_match,
            mark_insertions=settings.mark_insertions,
            random_pool=pool,
        )

    def render(self, example: PreferenceExample) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
        """(corrupted tiles, {"chosen": spans, "rejected": spans, "kept": (chosen, rejected) tokens}).

        The spans are the characters of the response tokens the collator flags as changed.
        """
        from chip.modeling import scored_lengths
        from chip.modeling.batch import CORRUPT, REAL, REAL_SEGMENT

        batch = self.collator([example])
        tiles = pixel_tiles(batch[CORRUPT], self.adapter.pixel_key, self.adapter.processor.image_processor)
        kept = scored_lengths(batch[REAL])  # [chosen, rejected] tokens left after max_length
        segments: dict[str, Any] = {"kept": kept}
        for k, side in enumerate(("chosen", "rejected")):
            text = getattr(example, side)
            flags = batch[REAL_SEGMENT][k, : kept[k]].tolist()
            segments[side] = flagged_spans(self.adapter.response_offsets(text), flags)
            segments[f"{side}_tokens"] = len(self.adapter.encode_response(text))
        return tiles, segments


def flagged_spans(offsets: list[tuple[int, int]], flags: list[bool]) -> list[list[int]]:
    """Character spans covered by runs of flagged tokens (a token's offsets are ``[start, end)``)."""
    spans: list[list[int]] = []
    run_open = False
    for (start, end), flag in zip(offsets, flags):
        if not flag or end <= start:
            run_open = run_open and flag
            continue
        if run_open and spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
        run_open = True
    return spans


def save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array, "RGB").save(path, "PNG", compress_level=1)


class _Urls:
    """Image paths as URLs relative to the page's folder; `os.path.relpath` once per image folder."""

    def __init__(self, base: Path):
        self.base = base
        self.folders: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        folder = self.folders.get(path.parent)
        if folder is None:
            try:
                folder = pathname2url(os.path.relpath(path.parent, self.base)) + "/"
            except ValueError:  # another drive: no relative path
                folder = path.parent.resolve().as_uri() + "/"
            self.folders[path.parent] = folder
        return folder + quote(path.name)


def add_pictures(
    rows: list[ViewRow],
    pictured: set[int],
    files: Path,
    base: Path,
    training: TrainingView | None,
    workers: int | None,
    progress: bool,
) -> None:
    """Fill each row's ``images`` (thumbnail / original file) and, with a model, ``corrupt`` tiles.

    Only the rows in ``pictured`` get thumbnails and corrupted images; URLs are relative to ``base``,
    the page's folder, and ``files`` is the page's ``<stem>_files`` folder.
    """
    refs = [ref for row in rows if row.row in pictured for ref in row.images if isinstance(ref, ImageRef)]
    thumbs = write_thumbnails(refs, files / "thumbs", workers)
    thumbs_url, urls = f"{quote(files.name)}/thumbs/", _Urls(base)
    for row in rows:
        entries = []
        for ref in row.images:
            if isinstance(ref, ImageProblem):
                entries.append({"thumb": None, "full": None, "note": ref.reason})
                continue
            # a usable row's image was checked; a bad row's may be missing, so it is not linked then
            linked = ref.path is not None and (row.example is not None or ref.path.is_file())
            thumb = thumbs.get(ref.key) if row.row in pictured else None
            entries.append(
                {
                    "thumb": thumbs_url + thumb if isinstance(thumb, str) else None,
                    "full": urls(ref.path) if linked else None,
                    "note": thumb.reason
                    if isinstance(thumb, ImageProblem)
                    else _missing_note(ref, linked, thumb),
                }
            )
        row.fields["images"] = entries
        row.fields["corrupt"] = None
    if training is None:
        return
    todo = [row for row in rows if row.row in pictured and row.example is not None]
    for row in tqdm(todo, desc="corrupted images", unit="row", disable=None if progress else True):
        _add_training_view(row, training, files)


def _missing_note(ref: ImageRef, linked: bool, thumb: str | None) -> str | None:
    if linked or thumb is not None:
        return None
    if ref.data is not None:
        return "inline image: its thumbnail is written for the rows of --pages"
    return f"{ref.describe()} is not a readable file"


def _add_training_view(row: ViewRow, training: TrainingView, files: Path) -> None:
    try:
        tiles, segments = training.render(row.example)
    except (ChipError, ValueError) as err:
        row.fields["corrupt_note"] = f"the training collator cannot show this row: {err}"
        return
    row.fields["corrupt"] = []
    for k, (label, pixels) in enumerate(tiles):
        name = f"{row.row}-{k}.png"
        save_png(pixels, files / "corrupt" / name)
        row.fields["corrupt"].append({"src": f"{quote(files.name)}/corrupt/{name}", "label": label})
    example = row.example
    if example.chosen_segments is None and example.rejected_segments is None:
        row.fields["spans"] = {"chosen": segments["chosen"], "rejected": segments["rejected"]}
        row.fields["derived"] = True
    cut = [
        f"{kept} of {segments[f'{side}_tokens']} {side} tokens"
        for side, kept in zip(("chosen", "rejected"), segments["kept"])
        if kept < segments[f"{side}_tokens"]
    ]
    if cut:
        row.fields["cut_note"] = f"training keeps only {' and '.join(cut)} (--max_length)"
