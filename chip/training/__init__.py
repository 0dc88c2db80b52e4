"""Training: config, collation, the reference strategies, the trainer and the `chip train` /
`chip data precompute` commands. The pure math it calls lives at the package root
(`chip.losses`, `chip.segments`, `chip.corruption`); model access in `chip.modeling`.
"""
