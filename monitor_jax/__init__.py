"""monitor_jax: train and evaluate LLM monitors in JAX."""
__version__ = "0.1.0"
