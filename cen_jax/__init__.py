"""cen-jax: Channel-Exchanging Networks (NeurIPS 2020, TPAMI) in JAX/Flax."""
