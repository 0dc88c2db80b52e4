"""A precomputed reference: per-token reference log-probs of W, L and C, and what the KL needs.

Training with ``--reference precomputed`` then needs no reference model in memory. Per example the
cache keeps the reference log-prob of every response token of W, L and C and, for the token-level
KL of W and L, the top-k reference log-probs and their token ids (k = 0: the whole vocabulary);
the tail mass is implied (1 − Σ top-k). Tensors are safetensors shards (never pickle) written
atomically; `manifest.json` holds a format version and a fingerprint of everything that changes
the numbers (model, tokenizer, data, corruption, seed, max length, k). A stale or mismatched
cache is refused, and a killed precompute resumes at the first missing shard.

Integrity: every file is written to ``NAME.tmp`` and renamed, so a crash leaves either the old file
or the new one, never half of it under the real name. Even so, nothing on disk is trusted blindly
(a copy can be cut short, a disk can fill up): a resumed precompute reuses a shard only when its
safetensors header is intact and its ids file lists exactly the examples that shard must hold, and
`ReferenceCache.open` refuses a manifest that does not parse or a shard whose size differs from the
one recorded in the manifest.

Shard size: ``SHARD_SIZE`` examples per shard, overridden by the ``CHIP_REFERENCE_SHARD_SIZE``
environment variable or the ``shard_size`` argument; smaller shards lose less work to a kill.

    chip data precompute --config recipe.yaml --reference_cache cache/   # then
    chip train --config recipe.yaml --reference precomputed --reference_cache cache/
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import send_to_device
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from chip.errors import ChipError, ConfigError
from chip.modeling.batch import CORRUPT, REAL, pair_rows, split_pairs
from chip.modeling.scores import spread

FORMAT = "chip-reference-cache"
VERSION = 1
SHARD_SIZE = 256  # examples per shard: the unit of resumption
SHARD_SIZE_ENV = "CHIP_REFERENCE_SHARD_SIZE"  # overrides SHARD_SIZE without a code change


class StaleCacheError(ChipError):
    """The cache on disk was made for another model, dataset or setting."""


def fingerprint(parts: dict) -> str:
    """A short stable hash of a JSON-able description of everything the cache depends on."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the model's config and a cheap sample of every parameter (first/last values).

    A LoRA-wrapped model hashes like its base: adapter weights are skipped and PEFT's renaming
    (``base_model.model.``, ``.base_layer``) undone, because the reference is the base model.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    params = {}
    for name, param in model.state_dict().items():
        if "lora_" in name:
            continue
        params[name.removeprefix("base_model.model.").replace(".base_layer.", ".")] = param
    for name, param in sorted(params.items()):
        flat = param.detach().reshape(-1)
        sample = torch.cat([flat[:256], flat[-256:]]).float().cpu()
        digest.update(name.encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:32]


def cache_settings(config, model: torch.nn.Module, processor, examples: Sequence) -> dict:
    """Everything a cache for this run depends on; its `fingerprint` names the cache."""
    tokenizer = getattr(processor, "tokenizer", processor)
    loss = config.loss_config
    return {
        "model": config.model_name_or_path, "model_hash": model_fingerprint(model),
        "tokenizer_hash": fingerprint(tokenizer.get_vocab()), "data_hash": dataset_fingerprint(examples),
        "corruption": config.corruption, "noise_step": config.noise_step, "seed": config.seed,
        "max_length": config.max_length, "kl_top_k": config.kl_top_k,
        "needs_kl": loss.needs_kl, "needs_corrupt": loss.needs_corrupt,
    }  # fmt: skip


def _changed_settings(then: dict, now: dict) -> str:
    """``name: old -> new`` for each setting that differs (hashes named by what they cover)."""
    changed = [f"{name}: {then.get(name)!r} -> {now.get(name)!r}" for name in sorted(set(then) | set(now))
               if then.get(name) != now.get(name)]  # fmt: skip
    return "; ".join(changed) or "the fingerprint differs"


def dataset_fingerprint(examples: Iterable) -> str:
    """Hash of each example's id, texts, segment spans and image references, in order."""
    digest = hashlib.sha256()
    for ex in examples:
        record = [ex.id, ex.prompt, ex.chosen, ex.rejected, ex.chosen_segments, ex.rejected_segments,
                  [getattr(ref, "key", repr(ref)) for ref in ex.images]]  # fmt: skip
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def _atomic_save(tensors: dict[str, Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> object:
    """A JSON file of the cache, or `StaleCacheError` when it does not parse (damaged, cut short)."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StaleCacheError(f"{path} is damaged ({err}); rerun `chip data precompute`") from None


def resolve_shard_size(shard_size: int | None = None) -> int:
    """``shard_size``, else ``$CHIP_REFERENCE_SHARD_SIZE``, else `SHARD_SIZE`; must be >= 1."""
    value: int | str = shard_size if shard_size is not None else os.environ.get(SHARD_SIZE_ENV, SHARD_SIZE)
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"{SHARD_SIZE_ENV} / shard_size must be a positive integer, got {value!r}")
    return size


def _reusable_shard(file: Path, ids_file: Path, expected_ids: list[str]) -> bool:
    """Whether a shard left by an earlier (possibly killed) run holds exactly ``expected_ids``, intact.

    The ids must match because the examples or the shard size may differ from the earlier run; the
    header check catches a file cut short (safetensors verifies the header covers the whole file).
    """
    if not (file.is_file() and ids_file.is_file()):
        return False
    try:
        if json.loads(ids_file.read_text()) != expected_ids:
            return False
        with safe_open(str(file), framework="pt") as shard:
            keys = set(shard.keys())
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError):
        return False
    return all(f"{index}/chosen_logps" in keys for index in range(len(expected_ids)))


@dataclass
class ReferenceCache:
    """Read side: loads every shard, answers padded per-batch tensors for the collator."""

    path: Path
    manifest: dict
    entries: dict[str, dict[str, Tensor]]

    @classmethod
    def open(cls, path: str | Path, expected: dict | None = None) -> ReferenceCache:
        """Load a cache; with ``expected`` (`cache_settings` of this run) refuse one made for other settings."""
        path = Path(path)
        manifest_file = path / "manifest.json"
        if not manifest_file.exists():
            raise StaleCacheError(
                f"{path}: no manifest.json — not a complete reference cache (run `chip data precompute`)"
            )
        manifest = _read_json(manifest_file)
        if not isinstance(manifest, dict):
            raise StaleCacheError(
                f"{manifest_file} is damaged (not a JSON object); rerun `chip data precompute`"
            )
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise StaleCacheError(
                f"{manifest_file}: format {manifest.get('format')!r} v{manifest.get('version')}, expected {FORMAT!r} v{VERSION}"
            )
        if expected is not None and manifest["fingerprint"] != fingerprint(expected):
            raise StaleCacheError(
                f"{path} was made with other settings ({_changed_settings(manifest.get('settings', {}), expected)}); "
                "recompute it with `chip data precompute` or train with the settings it was made with"
            )
        entries: dict[str, dict[str, Tensor]] = {}
        for shard in manifest["shards"]:
            tensors = _load_shard(path / shard["file"], shard.get("bytes"))
            for index, example_id in enumerate(shard["ids"]):
                prefix = f"{index}/"
                entries[example_id] = {
                    k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)
                }
        return cls(path, manifest, entries)

    def batch(
        self, ids: Sequence[str], real_kept: Sequence[int], corrupt_kept: Sequence[int] | None
    ) -> dict[str, Tensor]:
        """Padded reference tensors for a batch laid out like the collator's rows.

        ``real_kept`` are the kept response lengths of the 2B rows [W_1..W_B, L_1..L_B];
        ``corrupt_kept`` those of the B rows C. Missing ids or lengths that disagree with the cache
        mean the data or settings changed after the cache was written.
        """
        missing = [i for i in ids if i not in self.entries]
        if missing:
            raise StaleCacheError(
                f"{self.path}: no reference for example ids {missing[:5]} (dataset changed?)"
            )
        records = [self.entries[i] for i in ids]

        def rows(name: str) -> list[Tensor]:  # one entry per scored real row
            return pair_rows([r[f"chosen_{name}"] for r in records], [r[f"rejected_{name}"] for r in records])

        out = {"real_logps": _pad(rows("logps"), real_kept, ids)}
        if "chosen_topk_logps" in records[0]:
            out["real_topk_logps"] = _pad(rows("topk_logps"), real_kept, ids)
            out["real_topk_ids"] = _pad(rows("topk_ids"), real_kept, ids)
        if corrupt_kept is not None:
            if "corrupt_logps" not in records[0]:
                raise StaleCacheError(
                    f"{self.path}: written without the corrupted-image rows (visual_weight was 0)"
                )
            out["corrupt_logps"] = _pad([r["corrupt_logps"] for r in records], corrupt_kept, ids)
        return out


def _load_shard(file: Path, expected_bytes: int | None) -> dict[str, Tensor]:
    """One shard's tensors; a missing, cut-short or unreadable shard is refused, never half-read."""
    if not file.is_file():
        raise StaleCacheError(
            f"{file} is missing: the reference cache is incomplete; rerun `chip data precompute`"
        )
    size = file.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        raise StaleCacheError(
            f"{file} has {size} bytes, the manifest recorded {expected_bytes}: the cache is damaged; "
            "rerun `chip data precompute`"
        )
    try:
        return load_file(str(file))
    except SafetensorError as err:
        raise StaleCacheError(
            f"{file} is not a readable safetensors file ({err}); rerun `chip data precompute`"
        ) from None


def _pad(rows: list[Tensor], kept: Sequence[int], ids: Sequence[str]) -> Tensor:
    width = max(kept, default=0)
    out = torch.zeros((len(rows), width, *rows[0].shape[1:]), dtype=rows[0].dtype)
    for i, (row, n) in enumerate(zip(rows, kept)):
        if row.shape[0] != n:
            raise StaleCacheError(
                f"cached reference for example {ids[i % len(ids)]!r} has {row.shape[0]} response tokens, "
                f"this run {n} (max_length or tokenizer changed?)"
            )
        out[i, :n] = row
    return out


def _split_rows(values: Tensor, mask: Tensor) -> list[Tensor]:
    """[N, R, ...] padded -> N tensors of their kept length."""
    return [values[i, : int(mask[i].sum())].cpu() for i in range(values.shape[0])]


def example_records(scores_real, scores_corrupt, num: int, top_k: int) -> list[dict[str, Tensor]]:
    """Cache records of one collated batch from reference `ResponseScores` of its real/corrupt rows."""
    chosen, rejected = split_pairs(_split_rows(scores_real.logps.float(), scores_real.mask), num)
    records = [{"chosen_logps": w, "rejected_logps": lo} for w, lo in zip(chosen, rejected)]
    if scores_real.token_logits is not None:
        logp = torch.log_softmax(scores_real.token_logits.float(), dim=-1)  # (n, V) real tokens only
        k = logp.shape[-1] if top_k <= 0 else min(top_k, logp.shape[-1])
        top_logps, top_ids = (
            spread(values, scores_real.mask) for values in logp.topk(k, dim=-1)
        )  # (2B, R, k)
        top_logps_w, top_logps_l = split_pairs(_split_rows(top_logps, scores_real.mask), num)
        top_ids_w, top_ids_l = split_pairs(_split_rows(top_ids.to(torch.int32), scores_real.mask), num)
        for i, record in enumerate(records):
            record.update(chosen_topk_logps=top_logps_w[i], rejected_topk_logps=top_logps_l[i],
                          chosen_topk_ids=top_ids_w[i], rejected_topk_ids=top_ids_l[i])  # fmt: skip
    if scores_corrupt is not None:
        corrupt = _split_rows(scores_corrupt.logps.float(), scores_corrupt.mask)
        for i, record in enumerate(records):
            record["corrupt_logps"] = corrupt[i]
    return records


@torch.no_grad()
def precompute_reference(
    model: torch.nn.Module,
    collator,
    examples: Sequence,
    path: str | Path,
    settings: dict,
    needs_kl: bool,
    batch_size: int = 8,
    shard_size: int | None = None,
) -> Path:
    """Score every example with the reference ``model`` and write the cache under ``path``.

    Shards cover fixed ranges of ``examples`` (``shard_size`` each, see `resolve_shard_size`), so
    after a kill the intact shards already on disk are kept, untouched, and only the missing or
    damaged ones are computed. A folder holding a cache for another fingerprint is refused rather
    than mixed.
    """
    from chip.training.reference import LiveReference

    reference = LiveReference(model)
    cache_fingerprint, kl_top_k = fingerprint(settings), settings["kl_top_k"]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    progress_file = path / "progress.json"
    shard_size = resolve_shard_size(shard_size)
    previous = _read_json(progress_file) if progress_file.exists() else None
    if previous is not None and (
        not isinstance(previous, dict) or previous.get("fingerprint") != cache_fingerprint
    ):
        raise StaleCacheError(
            f"{path} holds a reference cache for another model/data/setting; remove it or pick another folder"
        )
    _atomic_write_text(json.dumps({"fingerprint": cache_fingerprint, "settings": settings}), progress_file)

    num_shards = (len(examples) + shard_size - 1) // shard_size
    shards = []
    done = 0
    bar = tqdm(total=len(examples), desc="reference cache", unit="ex")
    for shard_index in range(num_shards):
        file = path / f"shard-{shard_index:05d}.safetensors"
        ids_file = file.with_suffix(".ids.json")
        chunk = examples[shard_index * shard_size : (shard_index + 1) * shard_size]
        chunk_ids = [ex.id for ex in chunk]
        if not _reusable_shard(file, ids_file, chunk_ids):
            _atomic_save(
                _score_chunk(reference, model, collator, chunk, batch_size, needs_kl, kl_top_k, bar), file
            )
            _atomic_write_text(json.dumps(chunk_ids), ids_file)
        else:
            bar.update(len(chunk))
        shards.append({"file": file.name, "ids": chunk_ids, "bytes": file.stat().st_size})
        done += len(chunk)
    bar.close()

    manifest = {"format": FORMAT, "version": VERSION, "fingerprint": cache_fingerprint, "settings": settings,
                "kl_top_k": kl_top_k, "num_examples": done, "shards": shards}  # fmt: skip
    _atomic_write_text(json.dumps(manifest, indent=1), path / "manifest.json")
    return path


def _score_chunk(
    reference, model, collator, chunk: Sequence, batch_size: int, needs_kl: bool, kl_top_k: int, bar
) -> dict[str, Tensor]:
    """One shard's tensors: every example of ``chunk`` scored by the reference, keyed ``"{index}/{name}"``."""
    device = next(model.parameters()).device
    tensors: dict[str, Tensor] = {}
    for start in range(0, len(chunk), batch_size):
        part = chunk[start : start + batch_size]
        batch = send_to_device(collator(list(part)), device)
        real = reference.scores(model, batch[REAL], need_logits=needs_kl)
        corrupt = reference.scores(model, batch[CORRUPT], need_logits=False) if CORRUPT in batch else None
        for offset, record in enumerate(example_records(real, corrupt, len(part), kl_top_k)):
            tensors.update({f"{start + offset}/{key}": value for key, value in record.items()})
        bar.update(len(part))
    return tensors
