"""Generation: a jitted prefill + decode loop over the KV cache (`decode.py`), token choice (`sampling.py`),
and the batching, chat and stop-id handling around them (`sampler.py`)."""
from monitor_jax.generate.sampler import Generation, Sampler, compilations, generate_ids, stop_ids

__all__ = ["Generation", "Sampler", "compilations", "generate_ids", "stop_ids"]
