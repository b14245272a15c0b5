"""Multi-domain image-to-image translation with CEN (Taskonomy).

``task.Translation`` is the task the training loop drives; ``modes`` holds
what ``main.py`` runs on a trained model (predict, analyze, export,
import_torch). The networks (CEN U-Net generator, shared PatchGAN) are in
``models``, the official GAN losses in ``losses``, the steps in ``steps``,
official-checkpoint conversion in ``convert``, the grain pipeline in
``input_pipeline`` and FID/KID with the FID Inception in ``fid`` and
``inception``. With ``config.data.targets`` the same task translates into
several target domains at once (multitask translation: one generator head,
ensemble and critic per target, exchange over every (input, target)
stream; ``models``).
"""

from cen_jax.tasks.translation.task import Translation

__all__ = ['Translation']
