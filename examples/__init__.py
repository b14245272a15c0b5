"""Examples of extending cen-jax from outside the library."""
