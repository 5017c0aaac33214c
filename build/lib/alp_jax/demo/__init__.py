"""The built-in demo: everything `make demo` needs and nothing else in alp_jax uses.

  synth.py      the three synthesisers (espeak-ng, fluidsynth, sox): clip attributes -> wav
  captions.py   captions written from a clip's true attributes
  corpus.py     the demo corpus: synthesise, caption, label, prepare (public command:
                python -m alp_jax.data.demo_corpus)
  tasks.py      the demo's probe and caption tasks (fresh clips, leakage-checked) and the encoder comparison
  sysdeps.py    checks for the system programs and files the synthesisers need
  __main__.py   `make demo`: python -m alp_jax.demo --out runs/demo

The demo is the top layer: it may import any part of alp_jax, and no part of alp_jax imports it.
"""
