r"""CEN image translation on Taskonomy: shading + texture edges -> RGB.

The official recipe (reference §8; official FID 62.6, KID 1.65 on the
Taskonomy sample set), with every field of the translation task:

  python main.py --config=configs/taskonomy_cen.py --workdir=runs/taskonomy \
    --config.data.data_dir=~/tensorflow_datasets \
    --config.eval.inception_weights=~/pt_inception-2015-12-05-6726825d.pth

The data is read from ``<data_dir>/downloads/manual/`` in the official
layout (one folder per domain, ``train_domain.txt``, ``val_domain.txt``;
see ``data/taskonomy.py``). Other translations: ``--config.data.inputs=
"('normal','depth_zbuffer')" --config.data.target=rgb``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The official translation recipe, every field named."""
  c = ml_collections.ConfigDict()
  c.seed = 42  # Drives init, dropout, shuffling and augmentation.
  c.task = 'translation'  # cen_jax/tasks/__init__.py TASKS.

  c.model = ml_collections.ConfigDict()
  c.model.ngf = 64  # Generator base width (official 64).
  c.model.ndf = 64  # Discriminator base width (official 64).
  # U-Net depth: 8 halves 256 down to 1 (official); image sides must be
  # multiples of 2 ** num_downs.
  c.model.num_downs = 8
  c.model.n_layers = 3  # Discriminator stride-2 convs (official 3).
  # Exchange variant after the InstanceNorm of encoder blocks 2..n-1
  # (cen_jax/core/exchange.py RULES, or 'pkg.module:rule'); 'none' is the
  # no-exchange ablation.
  c.model.exchange = 'bn_threshold'
  # The official threshold on |IN gamma| is 1e-2 (not segmentation's 2e-2).
  c.model.exchange_kwargs = ml_collections.ConfigDict({'threshold': 1e-2})
  c.model.dropout_rate = 0.5  # Decoder dropout (pix2pix).
  c.model.dropout_blocks = 3  # On the first three decoder blocks.
  c.model.norm_momentum = 0.9  # Flax momentum of IN running stats (PT 0.1).
  c.model.norm_epsilon = 1e-5  # PyTorch default.
  c.model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16'.

  c.data = ml_collections.ConfigDict()
  # TFDS builder (data/): 'taskonomy' (official layout, manual dir) or
  # 'synthetic_taskonomy' (generated; configs default, tiny).
  c.data.name = 'taskonomy'
  # TFDS data directory; '' = <workdir>/tfds.
  c.data.data_dir = '~/tensorflow_datasets'
  c.data.eval_split = 'test'  # The official val_domain.txt list.
  # Input domains in model order (official -i 2 7 0: reshading, edge
  # texture -> rgb); M = len(inputs), any M >= 1.
  c.data.inputs = ('reshading', 'edge_texture')
  c.data.target = 'rgb'  # Not among the inputs.
  # Multitask translation: two or more target domains, each with its own
  # generator head, ensemble and critic (configs/taskonomy_multitask.py);
  # set config.data.target to '' then. () = the one target above.
  c.data.targets = ()
  c.data.load_size = 286  # Training resize before the random crop.
  c.data.crop_size = 256  # Random training crop; eval resizes to this.
  c.data.worker_count = 0  # grain worker processes (0 = main process).

  c.optim = ml_collections.ConfigDict()
  c.optim.batch_size = 1  # Global batch over all devices (official 1).
  c.optim.lr_g = 2e-4  # Adam, generator.
  c.optim.lr_d = 2e-4  # Adam, discriminator.
  c.optim.beta1 = 0.5
  c.optim.beta2 = 0.999
  c.optim.l1_weight = 100.0  # Reconstruction L1 weight (official --gama).
  # L1 on the encoder InstanceNorm scales (official --lamda 1e-3): each
  # modality on its own disjoint part of the channels ('slices'), or on all
  # of them ('all', ablation).
  c.optim.slim_coef = 1e-3
  c.optim.l1_scope = 'slices'
  c.optim.num_epochs = 300  # Official 300, constant learning rates.
  c.optim.num_steps = -1  # > 0 overrides the length given by num_epochs.

  c.train = ml_collections.ConfigDict()
  c.train.log_every_steps = 100
  c.train.eval_every_epochs = 5  # Official: every 5 epochs.
  c.train.checkpoint_every_steps = 1000  # Rolling checkpoint for resume.
  c.train.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 1  # Rounded up to fill every device.
  # 'official': the generator as the official evaluation runs it (per-image
  # InstanceNorm statistics, dropout on; each example's dropout seeded by
  # its position); 'deterministic': running statistics, no dropout.
  c.eval.protocol = 'official'
  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth; '' = FID/KID off
  # (L1 and RMSE are still reported). Nothing is downloaded.
  c.eval.inception_weights = ''
  c.eval.kid_subsets = 50  # Official KID: 50 subsets ...
  c.eval.kid_subset_size = 1000  # ... of min(1000, n) images.
  c.eval.kid_seed = 0  # Draws of the KID subsets.
  return c
