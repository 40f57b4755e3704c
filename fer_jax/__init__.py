"""fer_jax: facial emotion recognition on FER2013 and FER+ with JAX and Flax."""
