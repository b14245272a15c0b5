"""Every config field, commented, with the official NYUDv2 recipe as default.

Experiment configs start from ``get_config()`` here and change what differs.
Any field can be overridden on the command line, e.g.
``--config.optim.batch_size=12``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The official CEN recipe (ResNet-101, NYUDv2) with every field named."""
  c = ml_collections.ConfigDict()
  c.seed = 42  # Official seed; drives init, dropout, shuffling, augmentation.
  # The task (cen_jax/tasks/__init__.py TASKS): 'segmentation'.
  c.task = 'segmentation'

  c.model = ml_collections.ConfigDict()
  c.model.depth = '101'  # ResNet depth: '50', '101', '152', 'tiny' (demos).
  c.model.num_classes = 40  # K; must equal the dataset's class count.
  c.model.width = 64  # ResNet stem width / stage-1 planes (64 officially).
  c.model.decoder_features = (512, 256)  # RefineNet widths (official heavy).
  # Exchange variant (cen_jax/core/exchange.py RULES): 'bn_threshold' (CEN),
  # 'none' (no-exchange ablation), 'random' (random-exchange ablation, a
  # fixed subset), 'random_per_step' (redrawn every step), 'annealed_threshold'
  # (threshold grows over training), 'soft_threshold' (differentiable mix);
  # or your own rule by import path, 'my_pkg.my_module:my_rule'
  # (examples/exchange_rules.py).
  c.model.exchange = 'bn_threshold'
  # Hyperparameters of the variant, passed to its rule: threshold for
  # 'bn_threshold' (official 2e-2, "slightly better"); ratio and seed for
  # the random ones; start and threshold for 'annealed_threshold';
  # threshold and temperature for 'soft_threshold'.
  c.model.exchange_kwargs = ml_collections.ConfigDict({'threshold': 2e-2})
  # 'frozen': BN normalises with its stored running statistics in training
  # too and never updates them; scale/bias still train (official recipe).
  # 'batch': ordinary batch statistics in training.
  c.model.bn_mode = 'frozen'
  c.model.bn_momentum = 0.9  # Flax momentum (= PyTorch momentum 0.1).
  c.model.bn_epsilon = 1e-5  # PyTorch default.
  c.model.dropout_rate = 0.5  # On l4, l3 and the final decoder feature.
  c.model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16'.
  # How conv weight gradients and max-pools are computed (same parameters
  # and numbers): 'auto' = the CPU formulation on CPU (shifted matmuls,
  # separable pooling; cen_jax/core/kernels.py, whose CPU programs also run
  # convolutions on XLA's Eigen emitter instead of YNNPACK), XLA's own on
  # GPU/TPU; 'xla' or 'cpu' force one.
  c.model.kernels = 'auto'
  # Recompute the encoder blocks' activations in the backward pass instead
  # of storing them (less memory for larger batches or crops; same numbers).
  c.model.remat_encoder = False

  c.data = ml_collections.ConfigDict()
  c.data.name = 'nyud_v2'  # TFDS builder (data/): nyud_v2, sunrgbd, ...
  # TFDS data directory holding the prepared dataset; '' = <workdir>/tfds.
  c.data.data_dir = '~/tensorflow_datasets'
  c.data.eval_split = 'test'  # Split evaluated during and after training.
  c.data.modalities = ('rgb', 'depth')  # Input order; M = len(modalities).
  c.data.crop_size = 500  # Random training crop (official 500).
  c.data.scale_range = (0.5, 2.0)  # Random scale range (official).
  c.data.shorter_side = 350  # Scale raised so the shorter side is >= this.
  c.data.worker_count = 0  # grain worker processes (0 = main process).

  c.optim = ml_collections.ConfigDict()
  c.optim.batch_size = 6  # Global batch over all devices (official 6).
  c.optim.momentum = 0.9  # SGD momentum, both groups.
  c.optim.weight_decay = 1e-5  # Coupled L2 on every parameter (PyTorch SGD).
  # 'stages' (official: constant LR per stage), 'poly' or 'cosine' (these
  # two start from the first stage's rates and span all stages).
  c.optim.schedule = 'stages'
  c.optim.encoder_lrs = (5e-4, 2.5e-4, 1e-4)  # Stem + ResNet stages.
  c.optim.decoder_lrs = (3e-3, 1.5e-3, 7e-4)  # Decoder, classifier, alpha.
  c.optim.stage_epochs = (100, 100, 100)  # Epochs per stage (R152: 150s).
  # The official code re-creates its optimisers at each stage: momentum
  # buffers start from zero again.
  c.optim.reset_momentum_at_stages = True
  c.optim.warmup_epochs = 0  # Linear warm-up ('poly' and 'cosine' only).
  c.optim.poly_power = 0.9  # Exponent of 'poly'.
  # Effective L1 coefficient on the bn2 scales. The official code adds
  # lamda = 2e-4 once per output (M + 1 = 3 outputs), so 3 x 2e-4 = 6e-4.
  c.optim.l1_coef = 6e-4
  # 'slices': modality m penalised on channels [m C/M, (m+1) C/M) (CEN's
  # disjoint sub-parts); 'all': every channel (ablation).
  c.optim.l1_scope = 'slices'
  c.optim.num_steps = -1  # > 0 overrides the length given by stage_epochs.

  c.train = ml_collections.ConfigDict()
  c.train.log_every_steps = 50  # Training scalars and progress.
  c.train.eval_every_epochs = 5  # Official: validation every 5 epochs.
  c.train.checkpoint_every_steps = 500  # Rolling checkpoint for resume.
  c.train.keep_checkpoints = 2  # Rolling checkpoints kept.
  # Local torchvision ResNet .pth for ImageNet initialisation of the
  # encoder ('' = random init). Nothing is downloaded.
  c.train.imagenet_checkpoint = ''

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 1  # Official 1; rounded up to fill every device.
  c.eval.scales = (1.0,)  # (1.0,) = official single-scale protocol.
  c.eval.flip = False  # Also average the horizontally flipped input.
  return c
