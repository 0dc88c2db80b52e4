"""The peers as variants of `bench/bench_step.py`: each runs in its own process and environment.

ms-swift and LLaMA-Factory pin transformers, TRL, peft, datasets and accelerate below chip's
(see `bench/peers/setup.sh`), so each lives in its own virtual environment under
``.venv-peers/`` and runs as a `bench/peers/worker.py` process. The main process writes what the
worker needs once per run: the workload's model (its weights as transformers saves them, with a
stock processor of the same settings), the images as PNG files and the rows' text. The worker
builds the peer's trainer through the peer's own pipeline and times its own steps on request, so
the run interleaves a peer's steps with chip's and TRL's like any other variant.

Three checks make sure a peer does the same work as TRL (the bar), all reported with the results:

- its summed log-probs of every chosen and rejected response of every batch, on the untouched
  weights, against TRL's (``DPOTrainer``'s collated rows scored by its own fused LM head): the
  same model, the same tokens, the same images;
- its first step's loss against log 2 (policy and reference start equal, so every pair's margin
  is 0 and the sigmoid DPO loss is -log σ(0));
- the real tokens its decoder calls carry in each timed step against TRL's for the same batch
  (two rows per pair, policy and reference): what it ran besides them is its padding.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.variants import TrlDpo, Variant
from bench.workload import Workload

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".venv-peers"


class PeerUnavailable(Exception):
    """The peer could not be set up for this workload; the message is what it said."""


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    package: str  # as `bench/peers/worker.py` names it
    driver: str  # module under bench/peers
    venv: str  # folder under .venv-peers
    padding_free: bool


PEERS = {
    peer.key: peer
    for peer in (
        Peer(
            "swift-dpo-padding-free",
            "(p1) ms-swift DPO, padding-free",
            "ms-swift",
            "swift_driver",
            "swift",
            True,
        ),
        Peer("swift-dpo", "(p1') ms-swift DPO, padded rows", "ms-swift", "swift_driver", "swift", False),
        Peer(
            "llamafactory-dpo",
            "(p2) LLaMA-Factory DPO",
            "llamafactory",
            "llamafactory_driver",
            "llamafactory",
            False,
        ),
    )
}
LOG2 = math.log(2.0)

_exports: dict[int, Path] = {}
_trl_logps: dict[int, dict[str, list[list[float]]]] = {}


class PeerVariant(Variant):
    """A peer's DPO step, run and timed in a `bench/peers/worker.py` process."""

    def __init__(self, workload: Workload, settings: dict[str, Any], peer: Peer):
        super().__init__(workload, settings)
        self.key, self.label, self.peer = peer.key, peer.label, peer
        self.measured: dict[str, Any] | None = None
        python = VENVS / peer.venv / "bin" / "python"
        if workload.device.type != "cpu":
            raise PeerUnavailable("the peers run on the CPU only in this benchmark")
        if not python.exists():
            raise PeerUnavailable(f"{python} not found: run bench/peers/setup.sh")
        folder = export(workload, settings)
        work_dir = Path(tempfile.mkdtemp(prefix=f"{peer.key}-", dir=folder))
        spec = {
            "peer": peer.package,
            "driver": peer.driver,
            "family": workload.preset.family,
            "model_dir": str(folder / "model"),
            "rows": str(folder / "rows.json"),
            "work_dir": str(work_dir),
            "batches": workload.batches(settings["num_batches"]),
            "num_rows": len(workload.examples),
            "batch_size": workload.preset.batch_size,
            "learning_rate": settings["learning_rate"],
            "dtype": workload.preset.dtype,
            "padding_free": peer.padding_free,
            "threads": torch.get_num_threads(),
        }
        (work_dir / "spec.json").write_text(json.dumps(spec))
        self.log_path = work_dir / "worker.log"
        self._start(python, work_dir)
        self.versions = self._receive()["versions"]
        ready = self._receive()
        self.report = {
            "peer_versions": self.versions,
            "log": str(self.log_path),
            "trainable_parameters": ready["trainable_parameters"],
            "attention": ready["attention"],
            "logps_check": compare_logps(ready["logps"], trl_logps(workload, settings)),
            "trainable_parameters_expected": _trainable(workload),
        }

    def _start(self, python: Path, work_dir: Path) -> None:
        read_fd, write_fd = os.pipe()
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            DISABLE_VERSION_CHECK="1",
        )
        env.pop("VIRTUAL_ENV", None)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "bench.peers.worker", str(work_dir / "spec.json"), str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                cwd=ROOT,
                env=env,
                text=True,
            )
        os.close(write_fd)
        self.replies = os.fdopen(read_fd)

    def _receive(self) -> dict[str, Any]:
        line = self.replies.readline()
        if not line:
            code = self.process.wait()
            if code == -9:  # nothing of the worker's own is left to say
                raise PeerUnavailable(
                    "the worker was killed (SIGKILL; on Linux usually the kernel's out-of-memory "
                    f"killer, see dmesg); its log: {self.log_path}"
                )
            tail = self.log_path.read_text().strip().splitlines()[-3:]
            raise PeerUnavailable(f"the worker exited ({code}): " + " | ".join(tail))
        message = json.loads(line)
        if "error" in message:
            self.close()
            raise PeerUnavailable(message["error"])
        return message

    def _send(self, command: dict[str, Any]) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._receive()

    def step(self, index: int) -> float:
        self.measured = self._send({"cmd": "step", "index": index})
        return self.measured["loss"]

    def memory(self, index: int) -> tuple[int, int]:
        """Bytes held between steps and the step's peak on top, measured in the worker."""
        reply = self._send({"cmd": "memory", "index": index})
        return reply["resident_bytes"], reply["step_peak_bytes"]

    def checks(self, real_per_step: list[int], indices: list[int]) -> dict[str, Any]:
        """The first-step loss and the real tokens of the timed steps against TRL's (see the module doc)."""
        first = self.measured["first_loss"] if self.measured else None
        expected = [trl_real_tokens(self.workload, self.settings, index) for index in indices]
        return {
            "first_loss": first,
            "first_loss_is_log2": first is not None and abs(first - LOG2) < 1e-4,
            "real_tokens_expected": expected,
            "real_tokens_match_trl": list(real_per_step) == expected,
        }

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()


def export(workload: Workload, settings: dict[str, Any]) -> Path:
    """The model, a stock processor, the images and the rows' text, written once per workload."""
    if id(workload) in _exports:
        return _exports[id(workload)]
    folder = Path(settings["output_dir"]) / "peers"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    workload.base_model.save_pretrained(folder / "model")
    stock_processor(workload).save_pretrained(folder / "model")
    rows = []
    for index, example in enumerate(workload.examples):
        image = folder / "images" / f"{index}.png"
        image.write_bytes(example.images[0].data)
        rows.append(
            dict(prompt=example.prompt, chosen=example.chosen, rejected=example.rejected, image=str(image))
        )
    (folder / "rows.json").write_text(json.dumps(rows))
    _exports[id(workload)] = folder
    return folder


def stock_processor(workload: Workload) -> Any:
    """The workload's processor as a stock transformers class (chip's Qwen-VL one drops video support)."""
    processor = workload.adapter.processor
    if workload.preset.family not in ("qwen2_vl", "qwen2_5_vl"):
        return processor
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=processor.chat_template,
    )


@torch.no_grad()
def trl_logps(workload: Workload, settings: dict[str, Any]) -> dict[str, list[list[float]]]:
    """TRL's summed log-probs of each batch's chosen and rejected responses on the untouched weights."""
    if id(workload) not in _trl_logps:
        trl = TrlDpo(workload, settings)
        model = trl.trainer.model.eval()
        chosen, rejected = [], []
        for batch in trl.batches:
            kwargs = {k: v for k, v in batch.items() if k != "completion_mask"}
            labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
            sums = model(**kwargs, labels=labels, fused_lm_head=True, use_cache=False).log_probs.sum(-1)
            first, second = sums.chunk(2)  # TRL's rows: every chosen response, then every rejected one
            chosen.append(first.tolist())
            rejected.append(second.tolist())
        _trl_logps[id(workload)] = {"chosen": chosen, "rejected": rejected}
        del trl
    return _trl_logps[id(workload)]


def compare_logps(peer: dict[str, list[list[float]]], trl: dict[str, list[list[float]]]) -> dict[str, Any]:
    """Largest difference between the peer's and TRL's summed response log-probs, absolute and relative."""
    pairs = [
        (p, t)
        for key in ("chosen", "rejected")
        for pb, tb in zip(peer[key], trl[key])
        for p, t in zip(pb, tb)
    ]
    counts_match = all(len(pb) == len(tb) for key in trl for pb, tb in zip(peer[key], trl[key]))
    worst = max(abs(p - t) for p, t in pairs)
    relative = max(abs(p - t) / abs(t) for p, t in pairs)
    return {
        "responses": len(pairs),
        "max_abs_diff": worst,
        "max_rel_diff": relative,
        "agree": counts_match and relative < 1e-5,
        "peer": peer,
        "trl": trl,
    }


def trl_real_tokens(workload: Workload, settings: dict[str, Any], index: int) -> int:
    """Real tokens TRL's decoder calls carry in a step on batch ``index``: prompt + response, two rows a pair,
    policy and reference."""
    batches = workload.batches(settings["num_batches"])
    ids = batches[index % len(batches)]
    return 2 * sum(
        2 * workload.tokens[i].prompt + workload.tokens[i].chosen + workload.tokens[i].rejected for i in ids
    )


def _trainable(workload: Workload) -> int:
    model = workload.fresh_model(trainable=True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _peer(key: str) -> Callable[[Workload, dict[str, Any]], Variant]:
    return lambda workload, settings: PeerVariant(workload, settings, PEERS[key])


PEER_VARIANTS: dict[str, Callable[[Workload, dict[str, Any]], Variant]] = {key: _peer(key) for key in PEERS}
