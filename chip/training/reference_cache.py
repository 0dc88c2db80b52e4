"""The read side of a precomputed reference: per-token reference log-probs of W, L and C, and the KL's top-k.

Training with ``--reference precomputed`` then needs no reference model in memory. Per example the
cache keeps the reference log-prob of every response token of W, L and C and, for the token-level
KL of W and L, the top-k reference log-probs and their token ids (k = 0: the whole vocabulary);
the tail mass is implied (1 − Σ top-k). Tensors are safetensors shards (never pickle);
`manifest.json` holds a format version and a fingerprint of everything that changes the numbers
(model, tokenizer, data, corruption, seed, max length, k). A stale or mismatched cache is refused.
`chip.training.precompute` writes it.

Integrity: nothing on disk is trusted blindly (a copy can be cut short, a disk can fill up, a
shared file system can flip a byte): the manifest records each shard's size and SHA-256, and
`ReferenceCache.open` checks every shard before training starts, refusing the cache with one line
that names each damaged shard and its example ids; ``chip data precompute --repair`` then
recomputes only those shards.

    chip data precompute --config recipe.yaml --reference_cache cache/   # then
    chip train --config recipe.yaml --reference precomputed --reference_cache cache/
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load
from torch import Tensor

from chip.errors import ChipError
from chip.modeling.batch import for_both_rows, pair_rows

FORMAT = "chip-reference-cache"
VERSION = 2  # 2: a SHA-256 per shard
SHOWN_IDS = 3  # example ids named per damaged shard


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
        "model": config.model_name_or_path,
        "model_hash": model_fingerprint(model),
        "tokenizer_hash": fingerprint(tokenizer.get_vocab()),
        "data_hash": dataset_fingerprint(examples),
        "corruption": config.corruption,
        "noise_step": config.noise_step,
        "seed": config.seed,
        "max_length": config.max_length,
        "kl_top_k": config.kl_top_k,
        "needs_kl": loss.needs_kl,
        "needs_corrupt": loss.needs_corrupt,
    }


def _changed_settings(then: dict, now: dict) -> str:
    """``name: old -> new`` for each setting that differs (hashes named by what they cover)."""
    changed = [
        f"{name}: {then.get(name)!r} -> {now.get(name)!r}"
        for name in sorted(set(then) | set(now))
        if then.get(name) != now.get(name)
    ]
    return "; ".join(changed) or "the fingerprint differs"


def dataset_fingerprint(examples: Iterable) -> str:
    """Hash of each example's id, texts, segment spans and image references, in order."""
    digest = hashlib.sha256()
    for ex in examples:
        record = [
            ex.id,
            ex.prompt,
            ex.chosen,
            ex.rejected,
            ex.chosen_segments,
            ex.rejected_segments,
            [getattr(ref, "key", repr(ref)) for ref in ex.images],
        ]
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def read_cache_json(path: Path) -> object:
    """A JSON file of the cache, or `StaleCacheError` when it does not parse (damaged, cut short)."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StaleCacheError(f"{path} is damaged ({err}); rerun `chip data precompute`") from None


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
        manifest = read_cache_json(manifest_file)
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
        damaged = []
        for shard in manifest["shards"]:
            try:
                tensors = load_shard(path, shard)
            except StaleCacheError as err:
                damaged.append(str(err))
                continue
            for index, example_id in enumerate(shard["ids"]):
                prefix = f"{index}/"
                entries[example_id] = {
                    k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)
                }
        if damaged:
            raise StaleCacheError(
                f"{path}: damaged reference cache: {'; '.join(damaged)}; run `chip data precompute` "
                "with the same settings and --repair to recompute only these shards"
            )
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

        real_ids = for_both_rows(list(ids))  # the example of each real row
        out = {"real_logps": _pad(rows("logps"), real_kept, real_ids)}
        if "chosen_topk_logps" in records[0]:
            out["real_topk_logps"] = _pad(rows("topk_logps"), real_kept, real_ids)
            out["real_topk_ids"] = _pad(rows("topk_ids"), real_kept, real_ids)
        if corrupt_kept is not None:
            if "corrupt_logps" not in records[0]:
                raise StaleCacheError(
                    f"{self.path}: written without the corrupted-image rows (visual_weight was 0)"
                )
            out["corrupt_logps"] = _pad([r["corrupt_logps"] for r in records], corrupt_kept, ids)
        return out


def file_sha256(data: bytes) -> str:
    """Hex SHA-256 of a shard's bytes, as the manifest records it."""
    return hashlib.sha256(data).hexdigest()


def load_shard(folder: Path, shard: dict) -> dict[str, Tensor]:
    """The tensors of one manifest ``shard`` entry; `StaleCacheError` naming the shard and its first
    example ids when it is missing, cut short, altered (checksum) or unreadable: never half-read."""
    file = folder / shard["file"]
    ids = shard.get("ids", [])
    name = f"{shard['file']} (examples {', '.join(map(str, ids[:SHOWN_IDS]))}{', ...' if len(ids) > SHOWN_IDS else ''})"
    if not file.is_file():
        raise StaleCacheError(f"{name} is missing")
    data = file.read_bytes()
    if shard.get("bytes") is not None and len(data) != shard["bytes"]:
        raise StaleCacheError(f"{name} has {len(data)} bytes, the manifest recorded {shard['bytes']}")
    if file_sha256(data) != shard.get("sha256"):
        raise StaleCacheError(f"{name} fails its checksum (altered on disk)")
    try:
        return load(data)
    except SafetensorError as err:
        raise StaleCacheError(f"{name} is not a readable safetensors file ({err})") from None


def _pad(rows: list[Tensor], kept: Sequence[int], row_ids: Sequence[str]) -> Tensor:
    """Each row's cached values ``(kept, ...)`` padded to the longest row: ``(rows, R, ...)``; a row whose
    length differs from this run's names its example (``row_ids``)."""
    width = max(kept, default=0)
    out = torch.zeros((len(rows), width, *rows[0].shape[1:]), dtype=rows[0].dtype)
    for i, (row, n) in enumerate(zip(rows, kept)):
        if row.shape[0] != n:
            raise StaleCacheError(
                f"cached reference for example {row_ids[i]!r} has {row.shape[0]} response tokens, "
                f"this run {n} (max_length or tokenizer changed?)"
            )
        out[i, :n] = row
    return out
