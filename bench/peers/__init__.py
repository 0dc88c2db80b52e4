"""ms-swift's and LLaMA-Factory's DPO steps as variants of `bench/bench_step.py` (``--with-peers``).

`variant.py` runs each peer in its own environment (`setup.sh`) as a `worker.py` process,
`swift_driver.py` and `llamafactory_driver.py` build each peer's trainer through its own pipeline,
`compat.py` writes the checkpoint in transformers 4.x's form where a peer pins 4.x, and
`report.py` puts the peers' checks and the targets into the report. Nothing here imports chip
on the peer's side.
"""
