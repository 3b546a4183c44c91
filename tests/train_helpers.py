"""A tiny model and real batches from the data pipeline, shared by the trainer tests."""
from __future__ import annotations

import numpy as np

from monitor_jax.data.encode import ClassificationEncoder, InstructionEncoder
from monitor_jax.data.mixing import make_schedule
from monitor_jax.data.pipeline import train_batches
from monitor_jax.data.sources import ListSource
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


def run_config(workdir, tokenizer, steps=8, **train):
    """The demo config shrunk to a 2-layer model on the 2x2x2 mesh, checkpoints every 2 steps, no eval."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from configs.demo import get_config

    c = get_config()
    c.workdir = str(workdir)
    c.model.tokenizer = tokenizer
    c.model.config = dict(family="llama", embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                          mlp_dim=64, tie_embeddings=False)
    c.mesh = dict(data=2, fsdp=2, tensor=2)
    c.train.steps, c.train.batch_size, c.train.log_every = steps, 8, 1
    c.train.checkpoint_every, c.train.best_metric = 2, ""
    c.eval.tasks, c.eval.every = [], 0
    for k, v in train.items():
        c.train[k] = v
    return c
