"""Benchmark scripts (speed, not correctness): they sit above the library in the dependency order and nothing in
the library imports them, except the demo, which reports the pipeline's throughput.

  python -m alp_jax.benchmarks.pipeline --corpus DIR ...      host input pipeline clips/s
  python -m alp_jax.benchmarks.model_sizes --sizes tiny,...   parameter counts, step FLOPs and step time per size
  python -m alp_jax.benchmarks.decoding --size base ...       caption decoding tokens/s with and without the KV cache
"""
