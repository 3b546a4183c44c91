"""The decoder, its config, Hugging Face import/export and the tokenizer."""
from monitor_jax.model.config import ModelConfig
from monitor_jax.model.create import abstract_model, create_model, state_shardings
from monitor_jax.model.hf import CheckpointError, load_hf, save_hf
from monitor_jax.model.transformer import KVCache, Transformer

__all__ = ["ModelConfig", "Transformer", "KVCache", "create_model", "abstract_model", "state_shardings",
           "load_hf", "save_hf", "CheckpointError"]
