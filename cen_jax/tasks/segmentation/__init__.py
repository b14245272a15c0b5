"""RGB-D semantic segmentation (NYUDv2, SUN RGB-D, your own RGB-D folders).

``task.Segmentation`` is the task the training loop drives; ``modes`` holds
what ``main.py`` runs on a trained model (predict, analyze, export,
import_torch). The network is in ``models/``, the official loss, metrics and
optimiser recipe beside it, the grain input pipeline in ``input_pipeline``.
"""

from cen_jax.tasks.segmentation.task import Segmentation

__all__ = ['Segmentation']
