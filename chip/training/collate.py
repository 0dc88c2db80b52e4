"""Batch preference examples into the three scored rows of CHiP.

Per example (docs/method.md): W = (y_w | v), L = (y_l | v), C = (y_w | ṽ). The prompt and its images are
preprocessed once and shared by W and L; C reuses the same token ids with noised pixels
(diffusion) or re-encodes the corrupted image (image-space kinds, which keep the image size, so the
number of image tokens is unchanged). Every corruption is seeded from (seed, example id), so any
pass over the same example — reference cache, reference model, policy — sees the same ṽ.

Output: the batch contract of `chip.modeling.batch` (keys ``ids``, ``real``, ``real_segment``,
``corrupt``, ``corrupt_segment``, ``reference``). ``real`` is in the shared-prefix layout of
`chip.modeling.VLMAdapter.collate_pairs` (one row ``[prompt, y_w, y_l]`` per example, the image
encoded once); ``reference`` comes from `chip.training.reference_cache.ReferenceCache.batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image

from chip.corruption import CorruptionKind, corrupt_image, diffusion_noise, example_generator
from chip.data import PreferenceExample
from chip.data.rows import Span
from chip.modeling import PromptInputs, VLMAdapter, scored_lengths
from chip.modeling.batch import (
    CORRUPT,
    CORRUPT_SEGMENT,
    IDS,
    MORE_CHOSEN_SEGMENT,
    MORE_REJECTED,
    MORE_REJECTED_OF,
    MORE_REJECTED_SEGMENT,
    REAL,
    REAL_SEGMENT,
    REFERENCE,
    pair_rows,
)
from chip.segments import changed_segments, spans_to_token_flags
from chip.training.config import ChipConfig
from chip.training.reference_cache import ReferenceCache

# The collator's settings that are `ChipConfig` fields of the same name.
SHARED_WITH_CONFIG = (
    "corruption",
    "noise_step",
    "seed",
    "max_length",
    "segment_min_match",
    "mark_insertions",
    "max_rejected",
)


@dataclass
class ChipCollator:
    """Turns a list of `PreferenceExample` into the W, L and C model inputs of one step.

    A run builds it with `from_config`. Built by hand, the corruption and the segment alignment
    default to `ChipConfig`'s defaults; the seed to 0 and the length to no cut.
    """

    adapter: VLMAdapter
    corruption: CorruptionKind = ChipConfig.default("corruption")  # kind of ṽ
    noise_step: int = ChipConfig.default("noise_step")  # diffusion step k of ṽ
    seed: int = 0  # run seed; with the example id it fixes every random corruption
    max_length: int | None = None  # longest prompt + response; only response tokens are cut
    score_corrupt: bool = True  # build the C rows (False when the visual weight is 0)
    segment_min_match: int = ChipConfig.default(
        "segment_min_match"
    )  # anchors of the chosen/rejected alignment
    mark_insertions: bool = ChipConfig.default("mark_insertions")  # also flag pure insertions/deletions
    max_rejected: int = ChipConfig.default("max_rejected")  # rejected responses per example (0 = all)
    corrupt_both: bool = False  # score the rejected response under ṽ too (image-anchored token weights)
    random_pool: Sequence[PreferenceExample] | None = None  # other examples, for corruption="random"
    reference_cache: ReferenceCache | None = None  # adds the ``reference`` entries when set

    @classmethod
    def from_config(
        cls,
        config: ChipConfig,
        adapter: VLMAdapter,
        examples: Sequence[PreferenceExample] | None = None,
        reference_cache: ReferenceCache | None = None,
    ) -> ChipCollator:
        """The collator of a run: every setting it shares with ``config`` read from there.

        ``examples`` are the pool ``corruption="random"`` draws other images from.
        """
        shared = {name: getattr(config, name) for name in SHARED_WITH_CONFIG}
        return cls(
            adapter,
            **shared,
            score_corrupt=config.loss_config.needs_corrupt,
            corrupt_both=config.loss_config.anchored,
            random_pool=examples,
            reference_cache=reference_cache,
        )

    def __call__(self, examples: list[PreferenceExample]) -> dict:
        prompts, corrupt_prompts, chosen_rows, rejected_rows = [], [], [], []
        chosen_flags, rejected_flags = [], []
        for example in examples:
            images = example.load_images()
            prompt = self.adapter.encode_prompt(images, example.prompt)
            chosen_ids = self.adapter.encode_response(example.chosen)
            rejected_ids = self.adapter.encode_response(example.rejected)
            flags_w, flags_l = self._segments(
                example.chosen,
                chosen_ids,
                example.chosen_segments,
                example.rejected,
                rejected_ids,
                example.rejected_segments,
            )
            prompts.append(prompt)
            chosen_rows.append(chosen_ids)
            rejected_rows.append(rejected_ids)
            chosen_flags.append(flags_w)
            rejected_flags.append(flags_l)
            if self.score_corrupt:
                corrupt_prompts.append(self._corrupt_prompt(example, images, prompt))

        real = self.adapter.collate_pairs(
            list(zip(prompts, chosen_rows, rejected_rows)), max_length=self.max_length
        )
        batch = {
            IDS: [example.id for example in examples],
            REAL: real,
            REAL_SEGMENT: _pad_flags(pair_rows(chosen_flags, rejected_flags), scored_lengths(real)),
        }
        batch.update(self._more_rejected(examples, prompts, chosen_rows, scored_lengths(real)))
        if self.score_corrupt and self.corrupt_both:
            rows = list(zip(corrupt_prompts, chosen_rows, rejected_rows))
            corrupt = self.adapter.collate_pairs(rows, max_length=self.max_length)
            batch[CORRUPT] = corrupt
            batch[CORRUPT_SEGMENT] = _pad_flags(
                pair_rows(chosen_flags, rejected_flags), scored_lengths(corrupt)
            )
        elif self.score_corrupt:
            corrupt = self.adapter.collate(
                list(zip(corrupt_prompts, chosen_rows)), max_length=self.max_length
            )
            batch[CORRUPT] = corrupt
            batch[CORRUPT_SEGMENT] = _pad_flags(chosen_flags, scored_lengths(corrupt))
        if self.reference_cache is not None:
            corrupt_kept = scored_lengths(batch[CORRUPT]) if self.score_corrupt else None
            batch[REFERENCE] = self.reference_cache.batch(batch[IDS], scored_lengths(real), corrupt_kept)
        return batch

    def _more_rejected(
        self,
        examples: list[PreferenceExample],
        prompts: list[PromptInputs],
        chosen_rows: list,
        real_kept: list[int],
    ) -> dict:
        """The batch entries of each example's rejected responses after the first (none when no example has one).

        The chosen response's flags are taken again against each rejected response: a derived
        alignment differs from one rejected response to the next.
        """
        rows, flags_w, flags_l, owner = [], [], [], []
        for index, example in enumerate(examples):
            for k, (text, spans) in enumerate(example.all_rejected(self.max_rejected)[1:], start=1):
                rejected_ids = self.adapter.encode_response(text)
                chosen_spans = example.chosen_segments_against(k)
                flags = self._segments(
                    example.chosen, chosen_rows[index], chosen_spans, text, rejected_ids, spans
                )
                rows.append((prompts[index], rejected_ids))
                flags_w.append(flags[0])
                flags_l.append(flags[1])
                owner.append(index)
        if not rows:
            return {}
        more = self.adapter.collate(rows, max_length=self.max_length)
        chosen_kept = [real_kept[index] for index in owner]
        return {
            MORE_REJECTED: more,
            MORE_REJECTED_SEGMENT: _pad_flags(flags_l, scored_lengths(more)),
            MORE_REJECTED_OF: torch.tensor(owner, dtype=torch.long),
            MORE_CHOSEN_SEGMENT: _pad_flags(flags_w, chosen_kept, width=max(real_kept)),
        }

    def _segments(
        self,
        chosen: str,
        chosen_ids: list[int],
        chosen_spans: list[Span] | None,
        rejected: str,
        rejected_ids: list[int],
        rejected_spans: list[Span] | None,
    ) -> tuple[list[bool], list[bool]]:
        """User-given character spans where present, else the token alignment of `chip.segments`.

        Each side is taken on its own: a row that annotates only the rejected answer (as rows with
        several rejected answers may) gets the chosen answer's flags from the alignment.
        """
        derived = None
        if chosen_spans is None or rejected_spans is None:
            derived = changed_segments(chosen_ids, rejected_ids, self.segment_min_match, self.mark_insertions)
        if chosen_spans is None:
            chosen_flags = derived[0]
        else:
            chosen_flags = self._span_flags(chosen, chosen_spans, len(chosen_ids))
        if rejected_spans is None:
            return chosen_flags, derived[1]
        return chosen_flags, self._span_flags(rejected, rejected_spans, len(rejected_ids))

    def _span_flags(self, text: str, spans, n_tokens: int) -> list[bool]:
        if not spans:
            return [False] * n_tokens
        return spans_to_token_flags(self.adapter.response_offsets(text), spans)

    def _corrupt_prompt(
        self, example: PreferenceExample, images: list[Image.Image], prompt: PromptInputs
    ) -> PromptInputs:
        generator = example_generator(self.seed, example.id)
        if self.corruption == "diffusion":
            key = self.adapter.pixel_key
            noised = dict(prompt.image_inputs)
            noised[key] = diffusion_noise(prompt.image_inputs[key], self.noise_step, generator)
            return replace(prompt, image_inputs=noised)
        corrupted = [
            corrupt_image(image, self.corruption, generator, random_pool=self._draw_other(example))
            for image in images
        ]
        return self.adapter.encode_prompt(corrupted, example.prompt)

    def _draw_other(self, example: PreferenceExample):
        """For corruption="random": another example's first image, drawn with the example's generator."""
        if self.corruption != "random":
            return None
        pool = self.random_pool
        if not pool or len(pool) < 2:
            raise ValueError("corruption='random' needs a dataset of at least two examples")

        def draw(generator: torch.Generator) -> Image.Image:
            while True:
                other = pool[int(torch.randint(len(pool), (), generator=generator))]
                if other.id != example.id and other.images:
                    return other.images[0].load()

        return draw


def _pad_flags(rows: list[list[bool]], kept: list[int], width: int | None = None) -> torch.Tensor:
    """Flags per kept response token (``kept``: tokens left after truncation, per row), padded: bool ``[N, R]``
    (R the longest kept row unless ``width`` is given)."""
    width = max(kept, default=0) if width is None else width
    out = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (flags, n) in enumerate(zip(rows, kept)):
        out[i, :n] = torch.tensor(flags[:n], dtype=torch.bool)
    return out
