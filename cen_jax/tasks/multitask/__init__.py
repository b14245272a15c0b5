"""Dense multitask prediction (issue 10, in progress): what exists so far.

* ``losses``: depth L1 and surface-normal cosine losses on valid pixels;
* ``metrics``: streaming sums and final metrics of depth estimation (abs
  err, abs rel, RMSE, delta < 1.25) and surface normals (mean and median
  angle, % within 11.25, 22.5 and 30 degrees), and the average relative
  gain Delta_m over single-task baselines.

Normals derived from depth are in ``data/normals.py``; the NYUv2 multitask
benchmark's data is the ``nyuv2_mtl`` builder (``data/nyuv2_mtl.py``). The
multitask model (one stream core over (modality, task) streams with task
heads), its configs and ``main.py`` modes are not built yet: this package is
not registered in ``cen_jax.tasks``.
"""
