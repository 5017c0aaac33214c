"""`python -m alp_jax.data.demo_corpus --out DIR [...]`: the public name of `python -m alp_jax.demo.corpus`.

The demo corpus lives in the demo package (alp_jax/demo/corpus.py, which documents the options); this file
only keeps the documented command working. It imports nothing from alp_jax: the data package does not depend
on the demo, which sits above it.
"""
import runpy

if __name__ == "__main__":
  runpy.run_module("alp_jax.demo.corpus", run_name="__main__", alter_sys=True)
