"""Evaluation suites: `get_config(task_root)` lists the tasks of an evaluation, each with the recipe that builds
its task folder (alp_jax/evaluate/recipes), its metric and protocol. study.py is the paper's suite."""
