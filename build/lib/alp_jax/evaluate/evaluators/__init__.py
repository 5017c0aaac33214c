"""One file per evaluator, each registered by name (alp_jax/train/evaluators.py finds a type here by its module
name; alp_jax/evaluate/evaluator.py is the contract). The trainer and `python -m alp_jax.evaluate` both pick up a
new file here without any other edit."""
