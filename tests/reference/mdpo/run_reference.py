"""Runs mDPO's released loss (luka-group/mDPO, mdpo_trainer.py) on fixed inputs; writes expected.json.

Usage: python run_reference.py FOLDER_WITH_MDPO_TRAINER_PY
It holds none of the reference's code: it imports ``mdpo_trainer.mDPOTrainer`` from that folder and
calls its ``dpo_loss`` unbound, with ``self`` a namespace holding ``beta``. See README.md.
"""

import json
import sys
import types
from pathlib import Path

import torch
import trl.trainer.utils

# mdpo_trainer.py imports `pad_to_length` (gone from trl >= 0.12); `dpo_loss` never calls it.
trl.trainer.utils.pad_to_length = None
sys.path.insert(0, sys.argv[1])
from mdpo_trainer import mDPOTrainer  # noqa: E402 (found through sys.path above)

CASES = [  # (name, beta, batch, response tokens, seed)
    ("b3_t5_beta0.1", 0.1, 3, 5, 0),
    ("b4_t7_beta0.5", 0.5, 4, 7, 1),
    ("b2_t4_beta2.0", 2.0, 2, 4, 2),
    ("b5_t9_beta0.1_wide", 0.1, 5, 9, 3),
]
ROWS = ("chosen", "rejected", "chosen_corrupt")


def inputs(batch: int, tokens: int, seed: int) -> dict:
    """Per-token log-probs and masks of W, L and C (C shares W's mask: the same response)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for row in ROWS:
        lengths = torch.randint(1, tokens + 1, (batch,), generator=gen)
        if row == "chosen_corrupt":
            lengths = torch.tensor(out["chosen"]["lengths"])
        scale = 4.0 if seed == 3 else 1.5
        logps = -torch.rand(batch, tokens, generator=gen, dtype=torch.float64) * scale
        ref_logps = -torch.rand(batch, tokens, generator=gen, dtype=torch.float64) * scale
        out[row] = {"lengths": lengths.tolist(), "logps": logps.tolist(), "ref_logps": ref_logps.tolist()}
    return out


def summed(row: dict, key: str) -> torch.Tensor:
    values = torch.tensor(row[key], dtype=torch.float64)
    mask = torch.arange(values.shape[1])[None, :] < torch.tensor(row["lengths"])[:, None]
    return torch.where(mask, values, 0.0).sum(-1)


def main() -> None:
    cases = []
    for name, beta, batch, tokens, seed in CASES:
        rows = inputs(batch, tokens, seed)
        losses, chosen_rewards, rejected_rewards, imageless_rewards = mDPOTrainer.dpo_loss(
            types.SimpleNamespace(beta=beta),
            summed(rows["chosen"], "logps"),
            summed(rows["rejected"], "logps"),
            summed(rows["chosen_corrupt"], "logps"),
            summed(rows["chosen"], "ref_logps"),
            summed(rows["rejected"], "ref_logps"),
            summed(rows["chosen_corrupt"], "ref_logps"),
        )
        cases.append(
            {
                "name": name,
                "beta": beta,
                "rows": rows,
                "losses": losses.tolist(),
                "chosen_rewards": chosen_rewards.tolist(),
                "rejected_rewards": rejected_rewards.tolist(),
                "imageless_rewards": imageless_rewards.tolist(),
            }
        )
    out = Path(__file__).with_name("expected.json")
    out.write_text(json.dumps({"cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
