r"""A few minutes on a laptop CPU: multitask CEN translation, built-in data.

  python main.py --config=configs/translation_multitask_quickstart.py \
    --workdir=/tmp/cen_translation_mtl

The translation quickstart (configs/translation_quickstart.py: narrow
6-level U-Net, 64x64 synthetic_taskonomy generated into <workdir>/tfds, its
learning rates and L1 coefficient, which let channels reach the exchange
threshold within the run) with one input and three targets: RGB -> surface
normals, shading and depth, three streams that share every conv, exchange
channels and each have their own head, ensemble and critic
(configs/taskonomy_multitask.py is the same at the official size).
Evaluates every target's stream and ensemble (L1, RMSE) and checkpoints;
running the command again resumes.
"""

from configs import translation_quickstart


def get_config():
  c = translation_quickstart.get_config()
  c.data.inputs = ('rgb',)
  c.data.target = ''
  c.data.targets = ('normal', 'reshading', 'depth_zbuffer')
  return c
