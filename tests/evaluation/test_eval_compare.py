"""`chip eval --compare` with hallucination and general benchmarks side by side, per model."""

from __future__ import annotations

import pytest

from chip.errors import DataError
from chip.evaluation.cli import main
from chip.evaluation.report import compare_table, load_runs
from chip.files import write_json_atomic


def model_folder(root, name: str, chair_i: float, perception: float, accuracy: float) -> str:
    folder = root / name
    write_json_atomic(
        folder / "chair.json", {"benchmark": "chair", "kind": "hallucination", "chair_i": chair_i}
    )
    write_json_atomic(folder / "mme.json", {"benchmark": "mme", "kind": "general", "perception": perception})
    # Written before chip recorded "kind": the registry says MMBench is general.
    write_json_atomic(
        folder / "mmbench.json", {"benchmark": "mmbench", "accuracy": accuracy, "n_questions": 5}
    )
    return str(folder)


def test_models_side_by_side_with_differences_to_the_base(tmp_path, capsys) -> None:
    """base / dpo / chip folders: CHAIR_i 30% -> 20% (-10.0 points) and 15% (-15.0); MME perception
    1500 -> 1480 (-20.00) and 1510 (+10.00); MMBench 60% -> 58% (-2.0) and 61% (+1.0).
    Hallucination rows come first, then general; counts are not shown."""
    runs = [
        model_folder(tmp_path, "base", 0.30, 1500.0, 0.60),
        model_folder(tmp_path, "dpo", 0.20, 1480.0, 0.58),
        model_folder(tmp_path, "chip", 0.15, 1510.0, 0.61),
    ]
    assert main(["--compare", *runs, "--markdown", str(tmp_path / "t.md")]) == 0
    table = capsys.readouterr().out
    assert table == (tmp_path / "t.md").read_text()
    lines = table.splitlines()
    assert lines[0] == "| metric | base | dpo | chip |"
    assert lines[2:] == [
        "| **hallucination** | | | |",
        "| chair.chair_i (%) ↓ | 30.0 | 20.0 (-10.0) | 15.0 (-15.0) |",
        "| **general** | | | |",
        "| mmbench.accuracy (%) ↑ | 60.0 | 58.0 (-2.0) | 61.0 (+1.0) |",
        "| mme.perception ↑ | 1500.00 | 1480.00 (-20.00) | 1510.00 (+10.00) |",
    ]


def test_files_with_one_name_form_one_column(tmp_path) -> None:
    """Files named alike by --names join one column; a benchmark only one model has shows "–"."""
    a, b, c = (tmp_path / f"{n}.json" for n in "abc")
    write_json_atomic(a, {"benchmark": "pope", "f1": 0.8})
    write_json_atomic(b, {"benchmark": "scienceqa", "kind": "general", "img_accuracy": 0.7})
    write_json_atomic(c, {"benchmark": "pope", "f1": 0.9})
    table = compare_table(load_runs([a, b, c], ["base", "base", "chip"]))
    assert "| pope.f1 (%) ↑ | 80.0 | 90.0 (+10.0) |" in table
    assert "| scienceqa.img_accuracy (%) ↑ | 70.0 | – |" in table


def test_combining_errors(tmp_path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, {"benchmark": "pope", "f1": 0.8})
    write_json_atomic(b, {"benchmark": "pope", "f1": 0.9})
    with pytest.raises(DataError, match="two metrics files of pope"):
        load_runs([a, b], ["m", "m"])
    write_json_atomic(b, {"chair_i": 0.1})
    with pytest.raises(DataError, match="without a 'benchmark' name"):
        load_runs([a, b], ["m", "m"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metrics JSON files"):
        load_runs([tmp_path / "empty"])
    (tmp_path / "mixed").mkdir()
    write_json_atomic(tmp_path / "mixed" / "results.json", {"methods": {}})
    with pytest.raises(DataError, match="not a chip eval metrics file"):
        load_runs([tmp_path / "mixed"])
