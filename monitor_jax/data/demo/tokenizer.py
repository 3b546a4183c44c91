"""The demo tokenizer: a byte-level BPE trained on the demo's rows and the research's prompts with their labels."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from monitor_jax.data import research
from monitor_jax.data.demo.domains import DOMAINS, demo_rows
from monitor_jax.data.demo.instruction import instruction_rows

if TYPE_CHECKING:   # importing monitor_jax.model imports jax; the demo data needs neither
    from monitor_jax.model.tokenizer import Tokenizer

# The prompts the demo tokenizer is trained on (with their labels). Only these: a prompt added to the research's
# tasks later must not change the tokenizer, and so every demo figure.
TOKENIZER_TASKS = ("chem_harm", "cyber_harm", "cyber_harm_inverted", "control_arena", "control_arena_paraphrased",
                   "covert_reasoning", "imdb")


def demo_corpus(seed: int = 0) -> list[str]:
    """Texts to train the demo tokenizer on: all train rows, instructions, and every prompt with its labels."""
    corpus = []
    for domain in DOMAINS:
        rows = demo_rows(domain, "train", seed)
        corpus += [r["text"] for r in rows]
        # Prompts followed by each label as the chat template places them, so "Yes"/"No" are one token each.
        for task in (research.TASKS[n] for n in TOKENIZER_TASKS if research.TASKS[n].domain == domain):
            for row in rows[:100]:
                prompt = "\n".join(m["content"] for m in task.chat(row))
                corpus += [f"{prompt}\n{task.positive}", f"{prompt}\n{task.negative}"]
    corpus += [m["content"] for row in instruction_rows("train", seed) for m in row["messages"]]
    return corpus


def build_demo_tokenizer(path: str | os.PathLike, vocab_size: int = 2048, seed: int = 0) -> Tokenizer:
    """A byte-level BPE trained on `demo_corpus`, saved to `path` with the ChatML template."""
    from monitor_jax.model.tokenizer import build_tokenizer

    return build_tokenizer(path, demo_corpus(seed), vocab_size=vocab_size)
