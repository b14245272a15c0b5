"""cen-jax: Channel-Exchanging Networks (NeurIPS 2020, TPAMI) in JAX/Flax.

Layout:

* ``core/``: what every task's model is built from (shared convs, private
  norms, exchange variants, the L1 term, resamplers, exchange analysis);
* ``training/``: the task-agnostic loop, checkpoints, cadence, sharding,
  optimiser pieces, and ``training.task``, the interface a task implements;
* ``tasks/``: one package per task (``tasks/segmentation``), chosen by
  ``config.task`` from ``tasks.TASKS``;
* ``run``: what each mode of ``main.py`` does, from a config.
"""
