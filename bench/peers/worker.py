"""The peer side of a benchmark run: builds a peer's DPO trainer through its own pipeline, then times steps on request.

Runs inside the peer's environment (``.venv-peers/NAME``, see `bench/peers/setup.sh`), started by
`bench/peers/variant.py` as ``python -m bench.peers.worker SPEC.json REPLY_FD``. The peer's own
entry point (ms-swift's ``SwiftRLHF``, LLaMA-Factory's ``run_exp``) parses the arguments, loads
the model and processor, encodes the dataset with its template and builds its trainer; where
``transformers.Trainer.train`` would enter its training loop, this module takes over and answers
commands read from stdin, one JSON object a line, with one JSON line each on ``REPLY_FD``:

- ``{"cmd": "step", "index": i}``: one step on the collated batch ``i`` (cycled), timed exactly as
  `bench/bench_step.py` times chip's and TRL's: ``training_step`` (forwards, loss, backward) +
  ``optimizer.step()`` + ``zero_grad()``, wall and CPU time, with the language decoder counted by
  `bench/padding.py`'s hook (positions run, real tokens among them);
- ``{"cmd": "memory", "index": i}``: the peak-memory step of `bench/peak.py` (held bytes plus the
  step's allocations), untimed;
- ``{"cmd": "quit"}``.

Before the first command it sends the versions, the trainable parameter count and the peer's own
summed log-probs of every chosen and rejected response of each batch, computed with its own
forward on the untouched weights (the check that it scores the same rows as TRL). No chip import:
the peer's transformers may be one in which chip does not load.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.padding import DecoderCount, decoder_of  # noqa: E402
from bench.peak import held_bytes, step_peak_bytes, tensors_in  # noqa: E402


class Finished(Exception):
    """Raised out of the peer's training loop once the main process says quit (skips its saving)."""


class Session:
    """A built trainer, its batches collated in advance by its own collator, and its optimizer."""

    def __init__(self, trainer: Any, spec: dict[str, Any], logps: Callable[[Any, Any], tuple[list, list]]):
        self.trainer, self.spec, self.logps = trainer, spec, logps
        dataset = trainer.train_dataset
        if len(dataset) != spec["num_rows"]:  # a peer may drop rows it rejects; the batches would differ
            raise ValueError(
                f"the peer kept {len(dataset)} of the {spec['num_rows']} rows (its log says why)"
            )
        self.batches = [trainer.data_collator([dataset[i] for i in ids]) for ids in spec["batches"]]
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which is not run
        trainer.create_optimizer()
        self.optimizer = trainer.optimizer
        self.models = [m for m in (trainer.model, getattr(trainer, "ref_model", None)) if m is not None]
        self.count = DecoderCount([decoder_of(m) for m in self.models])
        self.first_loss: float | None = None

    def step(self, index: int) -> float:
        trainer = self.trainer
        loss = float(trainer.training_step(trainer.model, self.batches[index % len(self.batches)]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.first_loss is None:
            self.first_loss = loss
        return loss

    def timed_step(self, index: int) -> dict[str, Any]:
        with self.count as count:
            started, cpu_started = time.perf_counter(), time.process_time()
            loss = self.step(index)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        totals = count.totals
        return dict(
            seconds=wall,
            cpu_seconds=cpu,
            loss=loss,
            first_loss=self.first_loss,
            calls=totals.calls,
            positions=totals.positions,
            real=totals.real,
        )

    def memory(self, index: int) -> dict[str, int]:
        transient = step_peak_bytes(lambda: self.step(index), torch.device("cpu"))
        tensors = [t for m in self.models for t in (*m.parameters(), *m.buffers())]
        tensors += [
            v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v)
        ]
        resident = held_bytes(tensors) + held_bytes(list(tensors_in(self.batches[0])))
        return dict(resident_bytes=resident, step_peak_bytes=transient)

    @torch.no_grad()
    def ready(self) -> dict[str, Any]:
        chosen, rejected = zip(*(self.logps(self.trainer, batch) for batch in self.batches))
        model = self.trainer.model
        return {
            "ready": True,
            "logps": {"chosen": list(chosen), "rejected": list(rejected)},
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "attention": getattr(model.config, "_attn_implementation", None),
        }


def serve(session: Session, reply: Callable[[dict[str, Any]], None]) -> None:
    reply(session.ready())
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            raise Finished
        if command["cmd"] == "step":
            reply(session.timed_step(command["index"]))
        elif command["cmd"] == "memory":
            reply(session.memory(command["index"]))
        else:
            raise ValueError(f"unknown command {command}")
    raise Finished  # stdin closed: the main process went away


def intercept_training(
    spec: dict[str, Any], logps: Callable, reply: Callable[[dict[str, Any]], None]
) -> None:
    """Make ``Trainer.train`` serve commands where its training loop would start.

    The peer's own ``train`` (ms-swift registers its multimodal hooks there) and the setup of
    `transformers.Trainer.train` run as usual; only the inner loop is replaced.
    """
    import transformers

    def inner_loop(trainer: Any, *args: Any, **kwargs: Any) -> None:
        serve(Session(trainer, spec, logps), reply)

    transformers.Trainer._inner_training_loop = inner_loop


def versions(peer: str) -> dict[str, str]:
    import platform

    import transformers
    import trl

    package = importlib.import_module({"ms-swift": "swift", "llamafactory": "llamafactory"}[peer])
    return {
        peer: getattr(package, "__version__", "?"),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    out = os.fdopen(int(argv[1]), "w", buffering=1)

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")

    torch.set_num_threads(spec["threads"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    driver = importlib.import_module(f"bench.peers.{spec['driver']}")
    try:
        reply({"versions": versions(spec["peer"])})
        intercept_training(spec, driver.logps, reply)
        driver.run(spec)
    except Finished:
        return 0
    except BaseException as error:  # the peer refused: its exact message goes back to the table
        reply({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
        return 1
    reply({"error": "the peer's pipeline returned without entering its training loop"})
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
