"""Safety rules: no remote code unless asked, no pickle in caches, no image path outside the root.

- ``trust_remote_code``: every ``from_pretrained`` of transformers that `chip train`,
  `chip data precompute` and evaluation generation reach is recorded (the Auto classes, the
  model, config and processor base classes); none gets ``trust_remote_code=True`` unless the user
  passed ``--trust_remote_code true``, and then the model, config and processor loads do.
- Caches: every file a reference precompute leaves is JSON or safetensors, nothing a pickle loader
  would execute (an allow-list, not a search for pickle magic bytes).
- Image paths escaping the image root (``../``, absolute paths, symlinks) are refused by the data
  layer: tests/data/test_broken_inputs.py (path_escapes_root, absolute_path_outside_root,
  symlink_out_of_root, test_allow_outside_root_accepts_escaping_paths); `chip train` refuses them
  the same way (test_train_bad_data.py, which runs those cases through `chip train`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import transformers
from PIL import Image
from safetensors import safe_open
from transformers.models.auto.auto_factory import _BaseAutoModelClass

from chip.evaluation.benchmarks import Question
from chip.evaluation.generate import GenerationSettings, generate_answers
from tests.reliability.conftest import Run
from tests.train_helpers import train_args, write_pairs

# Every class defining its own `from_pretrained` that a chip command can reach, directly or through
# another (each Auto model class gets its own copy of the method, so it is listed, not only the base).
LOADERS = (
    _BaseAutoModelClass,
    transformers.AutoModelForImageTextToText,
    transformers.AutoConfig,
    transformers.AutoProcessor,
    transformers.AutoTokenizer,
    transformers.AutoImageProcessor,
    transformers.PreTrainedModel,
    transformers.PretrainedConfig,
    transformers.ProcessorMixin,
)

Call = tuple[str, Any]  # ("ClassName", the trust_remote_code it was given, None when absent)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Call]]:
    """Records ``(class name, trust_remote_code)`` for every transformers ``from_pretrained`` call."""
    calls: list[Call] = []
    for owner in LOADERS:
        original = owner.__dict__["from_pretrained"].__func__  # KeyError: the method moved, update LOADERS

        def recording(cls: type, *args: Any, _original: Callable = original, **kwargs: Any) -> Any:
            calls.append((cls.__name__, kwargs.get("trust_remote_code")))
            return _original(cls, *args, **kwargs)

        monkeypatch.setattr(owner, "from_pretrained", classmethod(recording))
    yield calls


def _commands(model: Path, tmp: Path, run_chip: Callable[..., Run], *extra: str) -> Path:
    """`chip data precompute` then `chip train` on 4 pairs; returns the cache folder."""
    data, cache = write_pairs(tmp / "data", n=4), tmp / "cache"
    argv = [*train_args(model, data, tmp / "out", max_steps=1), *extra]
    assert run_chip(["data", "precompute", *argv, "--reference_cache", cache]).code == 0
    assert run_chip(["train", *argv]).code == 0
    return cache


def test_trust_remote_code_is_never_passed_unless_asked(
    loads: list[Call], tiny_model: Callable[..., Path], tmp_path: Path, run_chip: Callable[..., Run]
) -> None:
    model = tiny_model("llava")
    _commands(model, tmp_path, run_chip)
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "img" / "0.png")
    generate_answers(
        model,
        [Question("q0", "Is there a cat?", "0.png")],
        tmp_path / "answers.jsonl",
        tmp_path / "img",
        GenerationSettings(max_new_tokens=2),
        progress=False,
    )

    loaded = {name for name, _ in loads}
    assert {"AutoConfig", "AutoModelForImageTextToText"} <= loaded and any(
        "Processor" in name for name in loaded
    )
    assert [call for call in loads if call[1]] == []


def test_trust_remote_code_is_passed_when_the_user_asks(
    loads: list[Call], tiny_model: Callable[..., Path], tmp_path: Path, run_chip: Callable[..., Run]
) -> None:
    _commands(tiny_model("llava"), tmp_path, run_chip, "--trust_remote_code", "true")

    trusted = {name for name, trust in loads if trust is True}
    assert {"AutoConfig", "AutoModelForImageTextToText"} <= trusted and any(
        "Processor" in name for name in trusted
    )


def test_reference_cache_holds_only_json_and_safetensors(
    tiny_model: Callable[..., Path], tmp_path: Path, run_chip: Callable[..., Run]
) -> None:
    cache = _commands(tiny_model("llava"), tmp_path, run_chip)

    files = sorted(path for path in cache.rglob("*") if path.is_file())
    assert {path.suffix for path in files} == {".json", ".safetensors"}, files
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            with safe_open(str(path), framework="pt") as shard:
                assert list(shard.keys())
