"""Every `ChipError` raised while setting up or running `chip train` reaches the user as one line.

`chip.cli` prints a `ChipError` as ``chip: error: <message>`` with the error's exit code (1 for
data and cache problems, 2 for configuration); anything else would be a traceback. Each case here
is a mistake a user makes in practice. Non-finite losses are in test_nonfinite.py, damaged caches
and checkpoints in test_interruption.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.conftest import Run, assert_one_line_error
from tests.train_helpers import train_args, write_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"), n=4)


def _yaml(tmp: Path, text: str) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return path


# (id, extra argv or a builder of it from tmp_path, exit code, fragment of the message)
CASES: list[tuple[str, Callable[[Path], list[str]], int, str]] = [
    (
        "unknown_corruption",
        lambda tmp: ["--corruption", "nonsense"],
        2,
        "--corruption must be one of diffusion, crop, black, rotate, blur, random; got 'nonsense'",
    ),
    ("negative_weight", lambda tmp: ["--segment_weight", "-1"], 2, "segment_weight must be >= 0"),
    ("precomputed_without_cache", lambda tmp: ["--reference", "precomputed"], 2, "needs --reference_cache"),
    ("kl_without_reference", lambda tmp: ["--reference", "none"], 2, "token-level KL needs a reference"),
    ("missing_config_file", lambda tmp: ["--config", str(tmp / "absent.yaml")], 2, "does not exist"),
    ("config_not_yaml", lambda tmp: ["--config", str(_yaml(tmp, "a: [1, 2"))], 2, "not valid YAML"),
    (
        "config_unknown_field",
        lambda tmp: ["--config", str(_yaml(tmp, "bogus_field: 3\n"))],
        2,
        "unknown field 'bogus_field'",
    ),
    ("dataset_missing", lambda tmp: ["--dataset", str(tmp / "absent.jsonl")], 1, "dataset not found"),
    (
        "empty_reference_cache",
        lambda tmp: ["--reference", "precomputed", "--reference_cache", str(tmp)],
        1,
        "no manifest.json",
    ),
    (
        "resume_from_missing_checkpoint",
        lambda tmp: ["--resume_from_checkpoint", str(tmp / "checkpoint-9")],
        2,
        "no such checkpoint folder",
    ),
]


@pytest.mark.parametrize(("extra", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_train_setup_errors_are_one_line(
    extra: Callable[[Path], list[str]],
    code: int,
    fragment: str,
    pairs: Path,
    tmp_path: Path,
    tiny_model: Callable[..., Path],
    run_chip: Callable[..., Run],
) -> None:
    argv = [*train_args(tiny_model("llava"), pairs, tmp_path / "out"), *extra(tmp_path)]
    message = assert_one_line_error(run_chip(["train", *argv]), code=code)
    assert fragment in message


def test_no_usable_rows_left_is_one_line(
    tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": 1}\nnot json\n')
    argv = train_args(tiny_model("llava"), data, tmp_path / "out", on_bad_row="skip")
    assert "no usable rows left to train on" in assert_one_line_error(run_chip(["train", *argv]))


def test_stale_reference_cache_is_one_line(
    pairs: Path, tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    """A cache written for other settings (here another noise step) is refused before training starts."""
    model, cache = tiny_model("llava"), tmp_path / "cache"
    assert (
        run_chip(
            ["data", "precompute", *train_args(model, pairs, tmp_path / "pre", reference_cache=cache)]
        ).code
        == 0
    )

    argv = train_args(
        model, pairs, tmp_path / "out", reference="precomputed", reference_cache=cache, noise_step=400
    )
    message = assert_one_line_error(run_chip(["train", *argv]))
    assert "noise_step: 500 -> 400" in message and "recompute it with `chip data precompute`" in message
