"""Dense multitask and multimodal multitask CEN (the TPAMI scenarios).

One *stream core* (``segmentation.models.CEN`` with ``heads``) runs S
streams, each an (input modality, task) pair from ``config.model.streams``:
every conv shared, BNs private, channels exchanged over all S, one output
head and one alpha-ensemble per task.

* ``streams``: parses and checks ``config.model.streams``; the task kinds
  (``semseg``, ``depth``, ``normals``), their primary and Delta_m metrics;
* ``input_pipeline``: ``nyuv2_mtl`` / ``synthetic_mtl``, and the CEN
  layout with fitted normals (``nyud_v2/normals``), with MTAN's
  augmentation;
* ``losses``: depth L1 and surface-normal cosine losses on valid pixels;
* ``metrics``: streaming sums and final metrics of depth (abs err, abs rel,
  RMSE, delta < 1.25) and normals (mean and median angle, % within 11.25,
  22.5 and 30 degrees), and the average relative gain Delta_m;
* ``steps``: the pure train and eval steps; ``task.Multitask`` the task the
  loop drives; ``modes`` predict, analyze and export.

Normals derived from depth (for ``nyud_v2/normals``) are in
``data/normals.py``.
"""

from cen_jax.tasks.multitask.task import Multitask

__all__ = ['Multitask']
