"""Training configs, one module per objective: `get_config(arg)` returns an ml_collections.ConfigDict.

Use one by module name or by file path (the top-level `configs/` of a checkout is a link to this folder):

  alp-train --config alp_jax.configs.clap:tiny --workdir runs/clap_tiny
  python -m alp_jax.train --config configs/clap.py:tiny --workdir runs/clap_tiny

`alp_jax.train.runs.load_config(spec)` accepts both forms. Shared pieces live in `common.py`.
"""
