"""The built-in synthetic world of ``chip demo``: shapes scenes, a tiny LLaVA base, preference pairs.

- ``chip.demo.world``: ``WorldConfig``, ``make_scene(seed, config) -> Scene`` (image, objects,
  faithful ``caption``, noisy ``train_caption``, POPE-style ``questions``), ``WORLD_VOCABULARY``
  for the CHAIR scorer.
- ``chip.demo.base``: ``BaseModelConfig.quick()/full()``, ``train_base_model(config, cache_dir)``
  -> a folder loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
- ``chip.demo.pairs``: ``write_preference_pairs(world, out_dir, count)`` -> JSONL rows (docs/data.md) + PNGs.
- ``chip.demo.measure``: captioning held-out scenes and their CHAIR numbers.

Submodules are imported on demand, so ``import chip.demo`` stays cheap.
"""
