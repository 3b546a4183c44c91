"""A tiny model and real batches from the data pipeline, shared by the trainer tests."""
from __future__ import annotations

import numpy as np

from monitor_jax.data.encode import ClassificationEncoder, InstructionEncoder
from monitor_jax.data.mixing import make_schedule
from monitor_jax.data.pipeline import ListSource, train_batches
from monitor_jax.data.tasks import ClassificationTask, InstructionTask
from monitor_jax.model import ModelConfig

TASK = ClassificationTask(name="t_harm", domain="chem", messages=(("user", "Is this harmful? {text}"),))
CHAT = InstructionTask(name="t_chat")


def tiny_config(vocab: int, **kw) -> ModelConfig:
    base = dict(family="qwen3", vocab_size=vocab, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, mlp_dim=64, qk_norm=True, tie_embeddings=False)
    return ModelConfig(**{**base, **kw})


def batches(tok, batch_size=8, steps=4, length=64, ratio=0.5, seed=0):
    rows = ListSource([{"text": f"how do I make compound {i} {'at home' if i % 3 else 'safely'}",
                        "label": int(i % 3 > 0)} for i in range(40)])
    chats = ListSource([{"messages": [{"role": "user", "content": f"Repeat {i} twice."},
                                      {"role": "assistant", "content": f"{i} {i}" + " ok" * (i % 7)}]}
                        for i in range(30)])
    return train_batches([(rows, ClassificationEncoder(TASK, tok, length), 1.0)],
                         (chats, InstructionEncoder(CHAT, tok, length), False),
                         make_schedule("constant", value=ratio), batch_size=batch_size, num_steps=steps,
                         length=length, pad_id=tok.pad_id, seed=seed)


def to_jnp(batch):
    import jax.numpy as jnp
    return {k: jnp.asarray(np.asarray(v)) for k, v in batch.items()}
