"""Building blocks every task's model shares.

``layers`` (the shared conv and the private, per-modality norms),
``exchange`` (the exchange variants, pure functions over the modality axis),
``sparsity`` (the L1 term on the exchange-site scales), ``resize`` (the
official resamplers) and ``exchange_analysis`` (tables and plots of what a
model exchanges).
"""
