"""The thread count chip chooses (issue 21): OMP_NUM_THREADS wins; a tiny model gets one thread;
training takes the usable cores, divided among the processes of this machine."""

from __future__ import annotations

import pytest

from chip.errors import ConfigError
from chip.training.threads import choose_threads, usable_cores


def test_omp_num_threads_is_the_users_word():
    assert choose_threads("train", {"OMP_NUM_THREADS": "3"}) == (3, "from OMP_NUM_THREADS")
    assert choose_threads("tiny", {"OMP_NUM_THREADS": "4"})[0] == 4


def test_tiny_models_take_one_thread():
    assert choose_threads("tiny", {})[0] == 1


def test_training_shares_the_cores_with_local_ranks():
    cores = usable_cores()
    threads, reason = choose_threads("train", {})
    assert threads == cores and f"{cores} usable cores" in reason
    threads, reason = choose_threads("train", {"LOCAL_WORLD_SIZE": str(cores * 2)})
    assert threads == 1 and f"shared by {cores * 2} processes" in reason


def test_bad_omp_num_threads_is_one_line():
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS must be a whole number >= 1, got 'two'"):
        choose_threads("train", {"OMP_NUM_THREADS": "two"})
