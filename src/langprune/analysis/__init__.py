"""Looking inside pruned multilingual models (the paper's section 5 and its v3 abstract).

- ``hidden``: one hooked forward pass per (model, probe set): mean-pooled hidden states per
  layer, the final (post-norm) embedding, and MLP activation probabilities.
- ``features``: LSAR split (Xie et al., 2022) of the final embedding into a language-specific
  part s and a language-agnostic part a; how much pruning moves each.
- ``drift``: layer-wise distance between dense and pruned hidden states.
- ``masks``: intersection over union of pruned weight sets between calibration languages.
- ``neurons``: language-specific MLP neurons by activation-probability entropy (LAPE,
  Tang et al., 2024) and how many of their weights each calibration language prunes.

Each module keeps its math in pure functions (arrays in, arrays or DataFrames out) and its
file handling in one ``run_*`` function that the CLI calls.
"""
