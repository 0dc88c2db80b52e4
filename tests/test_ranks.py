"""chip.ranks: which process owns a unit, and merging per-process parts into one file (no launch).

The launched commands: tests/evaluation/test_eval_launched.py, tests/pairs/test_pairs_launched.py,
tests/training/test_precompute_launched.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from chip.errors import DataError
from chip.ranks import Ranks, current_ranks, merge_parts, part_files, share_of


def _row(key: str, answer: str = "yes") -> str:
    return json.dumps({"question_id": key, "answer": answer}) + "\n"


def test_share_of_is_a_hash_of_the_id_alone() -> None:
    """The owner of "q7" among 3 processes, worked out with hashlib here: the first 8 bytes of
    blake2b-64("q7"), little-endian, mod 3. Every unit has exactly one owner."""
    expected = int.from_bytes(hashlib.blake2b(b"q7", digest_size=8).digest(), "little") % 3
    assert share_of("q7", 3) == expected
    keys = [f"q{i}" for i in range(300)]
    owners = [[Ranks(index, 3).owns(key) for index in range(3)] for key in keys]
    assert all(sum(row) == 1 for row in owners)
    counts = [sum(row[index] for row in owners) for index in range(3)]
    assert min(counts) > 70, counts  # 100 each on average: no process is left idle
    assert all(Ranks().owns(key) for key in keys)


def test_alone_without_a_launch(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = current_ranks()
    assert ranks == Ranks(0, 1) and ranks.is_main
    ranks.wait()  # nothing to wait for
    assert ranks.part(Path("a.jsonl")) == Path("a.jsonl")
    assert Ranks(1, 2).part(Path("out/a.jsonl")) == Path("out/a.jsonl.part-1-of-2")


def test_parts_are_merged_in_work_order_once_each(tmp_path) -> None:
    """The file holds q0 (from an earlier run); two parts of a launch hold q3, q1 and q2 (rank 1's
    last line torn by a kill, so q4 is not done), and an old part of a 3-process launch repeats q0
    (a merge killed between its rename and removing the parts). The merge: q0 q1 q2 q3, each once,
    in the order of the work list; the parts are gone."""
    path = tmp_path / "a.jsonl"
    path.write_text(_row("q0"))
    (tmp_path / "a.jsonl.part-0-of-2").write_text(_row("q3") + _row("q1"))
    (tmp_path / "a.jsonl.part-1-of-2").write_text(_row("q2") + _row("q4")[:10])
    (tmp_path / "a.jsonl.part-2-of-3").write_text(_row("q0", answer="again"))
    assert len(part_files(path)) == 3
    merge_parts(path, ["q0", "q1", "q2", "q3", "q4"], "question_id")
    assert path.read_text() == _row("q0") + _row("q1") + _row("q2") + _row("q3")
    assert part_files(path) == []


def test_nothing_rewritten_without_parts_in_order(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(_row("q0") + _row("q1") + _row("extra"))
    before = path.stat().st_mtime_ns
    merge_parts(path, ["q0", "q1"], "question_id")  # an id outside the work list stays, last
    assert path.stat().st_mtime_ns == before
    path.write_text(_row("q1") + _row("q0"))  # a resumed one-process run that was out of order
    merge_parts(path, ["q0", "q1"], "question_id")
    assert path.read_text() == _row("q0") + _row("q1")


def test_unreadable_part_is_one_line(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    (tmp_path / "a.jsonl.part-0-of-2").write_text(_row("q0") + "not json\n")
    with pytest.raises(DataError, match=r"a\.jsonl\.part-0-of-2:2: no readable 'question_id'"):
        merge_parts(path, ["q0"], "question_id")
