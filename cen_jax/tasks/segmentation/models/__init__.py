"""The segmentation CEN and the factory that builds it from ``config.model``."""

from typing import Any, Mapping, Sequence

import jax.numpy as jnp

from cen_jax.core import exchange
from cen_jax.core import kernels
from cen_jax.tasks.segmentation.models.cen import BN_MODES, CEN, bn2_scales
from cen_jax.tasks.segmentation.models.resnet import STAGE_SIZES

__all__ = ['BN_MODES', 'CEN', 'STAGE_SIZES', 'bn2_scales', 'build']

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _choice(table: Mapping[Any, Any], key: Any, what: str) -> Any:
  if key not in table:
    raise ValueError(f'Unknown {what} {key!r}; choose one of {list(table)}.')
  return table[key]


def _depth(depth: Any) -> Any:
  # Configs hold depth as text ('101', 'tiny') so one field takes both.
  return int(depth) if str(depth).isdigit() else depth


def build(model_config: Mapping[str, Any], *,
          heads: Sequence[tuple[str, int]] = (),
          stream_heads: Sequence[int] = (),
          suffix_heads: bool = False) -> CEN:
  """Builds ``CEN`` from a ``config.model`` ConfigDict (or a plain dict).

  Fields: ``depth`` (50, 101, 152 or 'tiny'), ``num_classes``, ``width``,
  ``decoder_features``, ``exchange`` and ``exchange_kwargs``, ``bn_mode``,
  ``bn_momentum``, ``bn_epsilon``, ``dropout_rate``, ``dtype``, ``kernels``,
  ``remat_encoder``. See ``configs/default.py`` for their meaning and
  defaults. ``heads``, ``stream_heads`` and ``suffix_heads`` make the
  multitask stream core (see ``CEN``); the multitask task derives them from
  ``config.model.streams``.
  """
  cfg = dict(model_config)
  kwargs = dict(cfg.get('exchange_kwargs') or {})
  return CEN(
      num_classes=cfg['num_classes'],
      stage_sizes=_choice(STAGE_SIZES, _depth(cfg['depth']), 'ResNet depth'),
      exchange=exchange.get(cfg['exchange'], **kwargs),
      width=cfg.get('width', 64),
      decoder_features=tuple(cfg.get('decoder_features', (512, 256))),
      bn_mode=_choice({m: m for m in BN_MODES}, cfg.get('bn_mode', 'frozen'),
                      'bn_mode'),
      bn_momentum=cfg.get('bn_momentum', 0.9),
      bn_epsilon=cfg.get('bn_epsilon', 1e-5),
      dropout_rate=cfg.get('dropout_rate', 0.5),
      dtype=_choice(DTYPES, cfg.get('dtype', 'float32'), 'dtype'),
      kernels=_choice({k: k for k in kernels.KERNELS},
                      cfg.get('kernels', 'auto'), 'config.model.kernels'),
      remat_encoder=bool(cfg.get('remat_encoder', False)),
      heads=tuple((str(n), int(c)) for n, c in heads),
      stream_heads=tuple(int(h) for h in stream_heads),
      suffix_heads=suffix_heads,
  )
