"""Hallucination benchmarks (docs/evaluation.md): pure scorers, a judge client, reports and generation.

One module per benchmark (`chair`, `pope`, `amber`, `mmhal`, `hallusion`), each a pure function
from answers and ground truth to a metrics dict; `generate` produces answers with a model and
`cli` is `chip eval`. Nothing here downloads data: annotation files come from user-given paths.
"""
