"""Sampling K responses per prompt, reproducibly and resumably, with the KV cache of `generate`.

    settings = SamplingSettings(samples=8, temperature=0.9, batch_size=16)
    sample_responses("runs/base", items, "data/round1/samples.ndjson", settings)

The work unit is (example id, sample index). A sample depends only on (seed, example id, sample
index) — not on the batch it ran in, the batch size or the number of processes — because
`generate`'s own sampling draws from one global random stream, whose state depends on every row
sampled before. Here `generate` decodes greedily and `SeededSampler` turns each greedy step into an
exact sample: with Gumbel noise g_v = -log(-log u_v), u_v ~ U(0, 1) independent,

    argmax_v (logit_v / T + g_v)  ~  softmax(logit / T)           (the Gumbel-max trick)

and the noise of row b at step t comes from a generator seeded by (seed, example id, sample
index, t) alone. Top-p keeps the smallest set of tokens whose probability reaches p, as
`transformers`' TopPLogitsWarper does, before the noise is added.

Samples are appended to a JSON Lines file as each batch finishes (one write, flushed and fsynced).
A restart reads the file, drops a last line torn by a kill, and samples only the missing units, so
a kill loses at most one batch, never duplicates a sample, and the finished file is the same byte
for byte as that of an uninterrupted run. Under `accelerate launch` each process samples the items
whose id hashes to its rank into a part of its own; the main process merges the parts (`chip.ranks`). Raising `samples` later adds samples 8..15 next to
0..7; resuming with another model or other decoding settings is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from chip.data import ImageProblem
from chip.errors import ConfigError, DataError
from chip.evaluation.generate import (
    GenerationSettings,
    batch_inputs,
    generate_new_tokens,
    load_for_generation,
    read_answered,
)
from chip.files import append_text
from chip.pairs.sources import PromptItem, stable_hash
from chip.ranks import current_ranks, merge_parts

if TYPE_CHECKING:
    from chip.modeling import VLMAdapter

_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class SamplingSettings:
    """How responses are drawn; every field that changes a sample is saved with it."""

    samples: int = 8  # responses per prompt (K)
    temperature: float = 1.0  # softmax temperature; must be > 0
    top_p: float = 1.0  # nucleus sampling mass; 1 keeps every token
    max_new_tokens: int = 256  # longest response in tokens
    seed: int = 0  # with the example id and sample index, fixes every sample
    batch_size: int = 16  # (prompt, sample) rows per generate() call; does not change the samples
    device: str | None = (
        None  # None: the launch's device for this process, else cuda when available, else cpu
    )
    dtype: str = "auto"  # "auto" keeps the checkpoint's dtype; or float32 / bfloat16 / float16

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("--samples, --batch_size and --max_new_tokens must be at least 1")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be above 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top_p must be in (0, 1], got {self.top_p}")

    def decoding(self) -> dict[str, Any]:
        """What is saved with every sample: the settings a resumed run must share."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Sample:
    """One sampled response, as stored in the samples file."""

    unit: str  # "<example id>#<sample index>"
    id: str  # the item's id
    sample: int  # sample index k in 0..K-1
    response: str
    tokens: int  # new tokens before EOS (or all of them when the response was cut)
    finished: bool  # ended with EOS; False when max_new_tokens cut it

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def unit_key(item_id: str, sample: int) -> str:
    """The work unit's name; unique because the sample index holds no '#'."""
    return f"{item_id}#{sample}"


class SeededSampler(LogitsProcessor):
    """Temperature, top-p and per-row Gumbel noise: `generate`'s greedy argmax becomes a sample.

    ``keys[b]`` is row b's 64-bit key (from seed, example id, sample index). The noise of row b at
    step t is drawn by a generator of its own, seeded by (key, t): the same whatever else is in
    the batch. Generators live on the scores' device (a CUDA generator draws other numbers than a
    CPU one, so samples are reproducible per device type, as the logits themselves are).
    """

    def __init__(self, keys: Sequence[int], prompt_length: int, temperature: float, top_p: float) -> None:
        self.keys = [int(k) for k in keys]
        self.prompt_length = prompt_length  # the padded prompt: step t sees prompt_length + t tokens
        self.temperature = temperature
        self.top_p = top_p

    def uniforms(self, step: int, vocab: int, device: torch.device) -> torch.Tensor:
        """U(0, 1) draws ``(B, V)`` of this step, row b from a generator seeded by (keys[b], step)."""
        out = torch.empty(len(self.keys), vocab, device=device)  # (B, V)
        for row, key in enumerate(self.keys):
            generator = torch.Generator(device=device).manual_seed(stable_hash("noise", key, step) >> 1)
            torch.rand(vocab, generator=generator, device=device, out=out[row])
        # rand can return 0, whose Gumbel noise -inf could leave a row without a finite score
        return out.clamp_(min=_TINY)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        logits = scores.float() / self.temperature  # (B, V)
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=False)  # (B, V)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
            remove = cumulative <= 1 - self.top_p
            remove[:, -1] = False  # the most likely token always stays
            logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
        gumbel = -torch.log(-torch.log(self.uniforms(step, logits.shape[-1], logits.device)))  # (B, V)
        return logits + gumbel


def sample_keys(seed: int, units: Sequence[tuple[PromptItem, int]]) -> list[int]:
    """Each unit's noise key, from (seed, example id, sample index) only."""
    return [stable_hash("sample", seed, item.id, k) for item, k in units]


def _load_images(item: PromptItem) -> list[Image.Image]:
    try:
        return [ref.load() for ref in item.images]
    except ImageProblem as problem:
        raise DataError(f"item {item.id!r}: {problem.reason}") from None


@torch.no_grad()
def sample_batch(
    model: torch.nn.Module,
    vlm: VLMAdapter,
    units: Sequence[tuple[PromptItem, int]],
    settings: SamplingSettings,
) -> list[Sample]:
    """One sample per (item, sample index) of `units`, whatever the batch holds besides."""
    images = [_load_images(item) for item, _ in units] if units[0][0].images else None
    inputs = batch_inputs(model, vlm, [item.prompt for item, _ in units], images)
    sampler = SeededSampler(
        sample_keys(settings.seed, units), inputs["input_ids"].shape[1], settings.temperature, settings.top_p
    )
    new_tokens = generate_new_tokens(
        model, vlm, inputs, settings.max_new_tokens, logits_processor=LogitsProcessorList([sampler])
    )  # (B, new)
    samples = []
    for (item, k), row in zip(units, new_tokens.tolist()):
        finished = vlm.eos_token_id in row
        kept = row[: row.index(vlm.eos_token_id)] if finished else row
        text = vlm.tokenizer.decode(kept, skip_special_tokens=True).strip()
        samples.append(Sample(unit_key(item.id, k), item.id, k, text, len(kept), finished))
    return samples


def _batches(units: Sequence[tuple[PromptItem, int]], size: int) -> Iterator[list[tuple[PromptItem, int]]]:
    # A batch never mixes rows with and without images: the processor takes one or the other.
    batch: list[tuple[PromptItem, int]] = []
    for unit in units:
        if batch and (len(batch) == size or bool(batch[0][0].images) != bool(unit[0].images)):
            yield batch
            batch = []
        batch.append(unit)
    if batch:
        yield batch


def sample_responses(
    model_path: str | Path,
    items: Sequence[PromptItem],
    path: str | Path,
    settings: SamplingSettings,
    adapter: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Sample every (item, k < settings.samples) not yet in `path`; returns the model's identity record
    (None when nothing was left to sample and the file names none)."""
    path = Path(path)
    units = [(item, k) for item in items for k in range(settings.samples)]
    order = [unit_key(item.id, k) for item, k in units]
    ranks = current_ranks()
    if ranks.is_main:  # the parts a killed launch left are samples too
        merge_parts(path, order, "unit")
    ranks.wait()
    done, first = read_answered(path, "unit")
    # all K samples of an item on one process: its prompt and images are prepared once
    todo = [unit for unit in units if unit_key(unit[0].id, unit[1]) not in done and ranks.owns(unit[0].id)]
    identity = _sample_todo(model_path, todo, path, ranks.part(path), first, settings, adapter, progress)
    ranks.wait()
    if ranks.is_main:
        merge_parts(path, order, "unit")
        if identity is None:  # the other processes did all the sampling
            first = read_answered(path, "unit")[1]
            identity = first.get("model") if first else None
    return identity


def _sample_todo(
    model_path: str | Path,
    todo: Sequence[tuple[PromptItem, int]],
    path: Path,
    part: Path,
    first: dict[str, Any] | None,
    settings: SamplingSettings,
    adapter: str | Path | None,
    progress: bool,
) -> dict[str, Any] | None:
    """Sample ``todo`` into ``part`` (``path`` itself in one process); the model's identity record."""
    if not todo:
        return first.get("model") if first else None
    generation = GenerationSettings(
        batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens,
        device=settings.device,
        dtype=settings.dtype,
    )
    model, vlm, identity = load_for_generation(model_path, adapter, generation)
    if first is not None and (first.get("model") != identity or first.get("settings") != settings.decoding()):
        raise ConfigError(
            f"{path} holds samples from another model or other settings ({first.get('model')}, "
            f"{first.get('settings')}); write to a new --output folder"
        )
    part.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(todo), unit="sample", disable=not progress) as bar:
        # closed on errors too: the error line must not land on the bar
        for batch in _batches(todo, settings.batch_size):
            rows = [
                {**sample.as_row(), "model": identity, "settings": settings.decoding()}
                for sample in sample_batch(model, vlm, batch, settings)
            ]
            append_text(part, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            bar.update(len(batch))
    return identity


def read_samples(path: str | Path, units: set[str]) -> dict[str, Sample]:
    """The samples of `path` whose unit is in `units` (a file may hold more: an earlier, larger K)."""
    samples: dict[str, Sample] = {}
    path = Path(path)
    if not path.is_file():
        return samples
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)  # read_answered has already checked and repaired the file
        if row["unit"] in units:
            try:
                samples[row["unit"]] = Sample(**{name: row[name] for name in Sample.__dataclass_fields__})
            except KeyError as err:
                raise DataError(f"{path}:{number}: field {err.args[0]!r}: missing") from None
    return samples
