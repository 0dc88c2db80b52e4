"""The write side of a precomputed reference: `chip data precompute` scores every example once.

Shards of ``SHARD_SIZE`` examples (overridden by the ``CHIP_REFERENCE_SHARD_SIZE`` environment
variable or the ``shard_size`` argument; smaller shards lose less work to a kill) are written in
the format `chip.training.reference_cache` reads. Every file is written to a temporary file and
renamed (`chip.files`), so a crash leaves either the old file or the new one, never half of it under the real
name; a resumed precompute reuses a shard only when its ids file (written after it) lists exactly
the examples that shard must hold and the shard matches the size and SHA-256 recorded there, so a
killed run resumes at the first missing shard. `repair_cache` (``--repair``) checks a finished cache
against its manifest and deletes the damaged shards, which the next precompute recomputes.

Under `accelerate launch` process r of n scores the shards r, r + n, r + 2n, ... (each exactly as
one process would: the same examples in the same batches) and the main process writes the
manifest once every shard is on disk, so the cache equals a one-process cache byte for byte. The
folder must be one every process sees (one file system for all nodes).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate.utils import send_to_device
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from chip.errors import ConfigError
from chip.files import write_atomic, write_text_atomic
from chip.modeling.batch import CORRUPT, REAL, split_pairs
from chip.modeling.scores import spread
from chip.ranks import Ranks, current_ranks
from chip.training.reference import LiveReference
from chip.training.reference_cache import (
    FORMAT,
    VERSION,
    StaleCacheError,
    file_sha256,
    fingerprint,
    load_shard,
    read_cache_json,
)

logger = logging.getLogger("chip")

SHARD_SIZE = 256  # examples per shard: the unit of resumption
SHARD_SIZE_ENV = "CHIP_REFERENCE_SHARD_SIZE"  # overrides SHARD_SIZE without a code change


def _atomic_save(tensors: dict[str, Tensor], path: Path) -> None:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    needed = sum(v.nbytes for v in tensors.values())
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp)), needed)


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


def _reusable_shard(file: Path, ids_file: Path, expected_ids: list[str]) -> dict | None:
    """The manifest entry of a shard left by an earlier (possibly killed) run if it holds exactly
    ``expected_ids``, intact; else None.

    The ids must match because the examples or the shard size may differ from the earlier run; the
    checksum recorded beside them (written after the shard) catches a file cut short or altered.
    """
    if not (file.is_file() and ids_file.is_file()):
        return None
    try:
        record = json.loads(ids_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or record.get("ids") != expected_ids:
        return None
    entry = {"file": file.name, **record}
    try:
        keys = set(load_shard(file.parent, entry))
    except StaleCacheError:
        return None
    return entry if all(f"{index}/chosen_logps" in keys for index in range(len(expected_ids))) else None


def _write_shard(tensors: dict[str, Tensor], file: Path, ids_file: Path, ids: list[str]) -> dict:
    """Write a shard, then its ids and checksum (the mark that it is complete); returns its manifest entry."""
    _atomic_save(tensors, file)
    data = file.read_bytes()
    record = {"ids": ids, "bytes": len(data), "sha256": file_sha256(data)}
    write_text_atomic(ids_file, json.dumps(record))
    return {"file": file.name, **record}


def repair_cache(path: str | Path) -> list[str]:
    """Check every shard of the finished cache at ``path`` against its manifest and delete the damaged
    ones, so that `precompute_reference` recomputes exactly those; returns what was wrong with each."""
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise StaleCacheError(
            f"{path}: no manifest.json, nothing to repair; run `chip data precompute` without --repair"
        )
    manifest = read_cache_json(manifest_file)
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        raise StaleCacheError(
            f"{manifest_file}: not a v{VERSION} cache manifest; run `chip data precompute` without --repair"
        )
    damaged = []
    for shard in manifest["shards"]:
        try:
            load_shard(path, shard)
        except StaleCacheError as err:
            damaged.append(str(err))
            (path / shard["file"]).unlink(missing_ok=True)
            (path / shard["file"]).with_suffix(".ids.json").unlink(missing_ok=True)
    return damaged


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
            record.update(
                chosen_topk_logps=top_logps_w[i],
                rejected_topk_logps=top_logps_l[i],
                chosen_topk_ids=top_ids_w[i],
                rejected_topk_ids=top_ids_l[i],
            )
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
    reference = LiveReference(model)
    cache_fingerprint, kl_top_k = fingerprint(settings), settings["kl_top_k"]
    path = Path(path)
    shard_size = resolve_shard_size(shard_size)
    ranks = current_ranks()
    _claim_folder(path, cache_fingerprint, settings, ranks)
    chunks = [examples[start : start + shard_size] for start in range(0, len(examples), shard_size)]
    mine = range(ranks.index, len(chunks), ranks.count)
    if ranks.count > 1:
        logger.info("process %d of %d: shards %s of %d", ranks.index, ranks.count, list(mine), len(chunks))
    # closed on an error too, so the error line does not land on the bar's line
    with tqdm(total=sum(len(chunks[index]) for index in mine), desc="reference cache", unit="ex") as bar:
        for shard_index in mine:
            file = path / f"shard-{shard_index:05d}.safetensors"
            ids_file = file.with_suffix(".ids.json")
            chunk = chunks[shard_index]
            chunk_ids = [ex.id for ex in chunk]
            if _reusable_shard(file, ids_file, chunk_ids) is None:
                tensors = _score_chunk(reference, model, collator, chunk, batch_size, needs_kl, kl_top_k, bar)
                _write_shard(tensors, file, ids_file, chunk_ids)
            else:
                bar.update(len(chunk))
    ranks.wait()
    if ranks.is_main:
        _write_manifest(path, chunks, cache_fingerprint, settings, kl_top_k)
    ranks.wait()  # no process reads the cache (chip train right after) before its manifest exists
    return path


def _write_manifest(
    path: Path, chunks: list[Sequence], cache_fingerprint: str, settings: dict, kl_top_k: int
) -> None:
    """``manifest.json``, written last: what the reader checks every shard against."""
    shards = []
    for shard_index, chunk in enumerate(chunks):
        file = path / f"shard-{shard_index:05d}.safetensors"
        chunk_ids = [ex.id for ex in chunk]
        entry = _reusable_shard(file, file.with_suffix(".ids.json"), chunk_ids)
        if entry is None:
            raise ConfigError(
                f"{file}: missing after every process finished; under a multi-node launch the cache "
                "folder must be on a file system all nodes share"
            )
        shards.append(entry)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": cache_fingerprint,
        "settings": settings,
        "kl_top_k": kl_top_k,
        "num_examples": sum(len(chunk) for chunk in chunks),
        "shards": shards,
    }
    write_text_atomic(path / "manifest.json", json.dumps(manifest, indent=1))


def _claim_folder(path: Path, cache_fingerprint: str, settings: dict, ranks: Ranks) -> None:
    """Mark ``path`` as holding the cache of ``settings`` (``progress.json``); refuse a folder that
    holds one for other settings, so two caches are never mixed. Every process checks; the main
    one writes."""
    path.mkdir(parents=True, exist_ok=True)
    progress_file = path / "progress.json"
    previous = read_cache_json(progress_file) if progress_file.exists() else None
    if previous is not None and (
        not isinstance(previous, dict) or previous.get("fingerprint") != cache_fingerprint
    ):
        raise StaleCacheError(
            f"{path} holds a reference cache for another model/data/setting; remove it or pick another folder"
        )
    if ranks.is_main:
        write_text_atomic(progress_file, json.dumps({"fingerprint": cache_fingerprint, "settings": settings}))
        for stale in path.glob("*.tmp"):  # left by a killed run; this run holds the folder (chip.runlock)
            stale.unlink()
    ranks.wait()


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
