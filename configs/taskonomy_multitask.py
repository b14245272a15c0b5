r"""Multitask CEN translation on Taskonomy: RGB -> normals, depth, shading.

One input domain, three target domains: the generator runs 3 streams,
(rgb -> normal), (rgb -> depth_zbuffer), (rgb -> reshading), sharing every
conv and transposed conv; each keeps its own InstanceNorms, exchanges
channels with the other two where its encoder IN scales are small (L1 on
three disjoint thirds, official coefficient and threshold), and has its own
final transposed conv (the task head), ensemble and PatchGAN critic. The
project's reading of the TPAMI paper's multitask scenario for translation:
the paper's architecture is not available (README, "Multitask
translation"). Every other field is the official recipe of
configs/taskonomy_cen.py.

  python main.py --config=configs/taskonomy_multitask.py \
    --workdir=runs/taskonomy_mtl --config.data.data_dir=~/tensorflow_datasets

Several inputs work too (T x M streams), e.g. --config.data.inputs=
"('rgb','edge_texture')". Single-target baselines: configs/taskonomy_cen.py
with --config.data.inputs="('rgb',)" --config.data.target=normal.
"""

from configs import taskonomy_cen


def get_config():
  c = taskonomy_cen.get_config()
  c.data.inputs = ('rgb',)
  c.data.target = ''
  c.data.targets = ('normal', 'depth_zbuffer', 'reshading')
  return c
