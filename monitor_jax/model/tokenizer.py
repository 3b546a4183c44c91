"""Tokenizers: `transformers.AutoTokenizer` from a local directory, never re-implemented.

`build_tokenizer` trains a small byte-level BPE with `tokenizers` on local text
and saves it with a ChatML chat template, for tests and the demo: nothing is
downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from monitor_jax.errors import CheckpointError, first_line

# ChatML, as Qwen uses. `{% generation %}` marks assistant content so that
# `return_assistant_tokens_mask` can put the instruction loss on it alone.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")


class Tokenizer:
    """A thin wrapper: the few calls monitor_jax needs, on a `transformers` tokenizer."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        if self.hf.pad_token_id is None and self.hf.eos_token_id is not None:
            # Llama 3 ships no pad token; padding is always masked, so eos serves.
            self.hf.pad_token = self.hf.eos_token

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def pad_id(self) -> int:
        return self.hf.pad_token_id

    @property
    def eos_id(self) -> int | None:
        return self.hf.eos_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(list(ids))

    def chat(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The chat template rendered as text (tokenize it with `encode`)."""
        if not self.hf.chat_template:
            raise CheckpointError(f"tokenizer {self.hf.name_or_path!r} has no chat template; add one to "
                             "tokenizer_config.json or chat_template.jinja")
        return self.hf.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)

    def save(self, path: str | os.PathLike) -> None:
        self.hf.save_pretrained(str(path))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer saved in a local directory (a checkpoint's, or `build_tokenizer`'s)."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise CheckpointError(f"tokenizer directory {path} does not exist (monitor_jax never downloads)")
    try:
        return Tokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"tokenizer directory {path} could not be loaded: {first_line(e)}") from e


def build_tokenizer(path: str | os.PathLike, texts: Iterable[str], vocab_size: int = 1024,
                    chat_template: str = CHATML_TEMPLATE) -> Tokenizer:
    """Train a byte-level BPE on `texts`, save it to `path` with a chat template, and load it back."""
    from tokenizers import Tokenizer as RawTokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<|pad|>", eos_token="<|im_end|>",
                                 unk_token=None, additional_special_tokens=["<|endoftext|>", "<|im_start|>"])
    hf.chat_template = chat_template
    Path(path).mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(path))
    return load_tokenizer(path)
