"""Tokenizers: `transformers.AutoTokenizer` from a local directory, never re-implemented.

Monitored text is untrusted: the agent under watch writes the transcript the monitor reads, and a string that
spells a control token (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`) would otherwise tokenize to that token
and let it close the monitor's turn and forge its own. So `chat` marks every message's content while the
chat template renders, and `encode` turns a marked text into ids with the template's own control tokens kept
and every control string inside content encoded as the ordinary text it spells (docs/tasks.md).

`build_tokenizer` trains a small byte-level BPE with `tokenizers` on local text
and saves it with a ChatML chat template, for tests and the demo: nothing is
downloaded.
"""
from __future__ import annotations

import os
import re
import secrets
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

# Marks around untrusted text while a template renders: private-use characters around a per-process nonce, so
# monitored text cannot spell them (and never reach the ids: `encode` removes them).
_NONCE = secrets.token_hex(8)
OPEN, CLOSE = f"\ue000{_NONCE}\ue001", f"\ue001{_NONCE}\ue000"
_MARKS = re.compile(re.escape(OPEN) + "|" + re.escape(CLOSE))


def untrusted(text: str) -> str:
    """`text` marked as content: control strings in it will encode as text. Whitespace at its edges stays
    outside the marks, so a template that trims content (Llama 3's, Gemma's) trims it as it would unmarked."""
    core = text.strip()
    if not core:
        return text
    start = text.index(core)
    return text[:start] + OPEN + core + CLOSE + text[start + len(core):]


def unmark(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text without its marks, and the [start, end) spans of untrusted text in it."""
    plain, spans, at, opened = [], [], 0, None
    for m in _MARKS.finditer(text):
        plain.append(text[at:m.start()])
        position = sum(map(len, plain))
        if (m.group() == OPEN) != (opened is None):
            raise ValueError("unbalanced untrusted-text marks: the chat template moved or dropped message content")
        if m.group() == OPEN:
            opened = position
        else:
            spans.append((opened, position))
            opened = None
        at = m.end()
    if opened is not None:
        raise ValueError("unbalanced untrusted-text marks: the chat template moved or dropped message content")
    plain.append(text[at:])
    return "".join(plain), spans


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

    @property
    def controls(self) -> re.Pattern:
        """The strings that encode to a special token (longest first, as the tokenizer matches them)."""
        if not hasattr(self, "_controls"):
            specials = sorted({t.content for t in self.hf.added_tokens_decoder.values() if t.special}, key=len,
                              reverse=True)
            self._controls = re.compile("|".join(map(re.escape, specials)) if specials else r"(?!)")
        return self._controls

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`. Marked text (`chat`, `untrusted`): a control string inside a mark encodes as the text it
        spells; outside, as its token. Text without a control string in a mark encodes exactly as the tokenizer
        encodes it unmarked."""
        if OPEN not in text:
            return self.hf.encode(text, add_special_tokens=add_special_tokens)
        plain, spans = unmark(text)
        found = [(m.start(), m.end()) for m in self.controls.finditer(plain)]
        inside = [(a, b) for a, b in found if any(a < e and s < b for s, e in spans)]
        if not inside:
            return self.hf.encode(plain, add_special_tokens=add_special_tokens)
        # Split at the template's own control tokens (as the tokenizer does at every added token) and encode the
        # text between them with special-token matching off.
        ids, at = [], 0
        for a, b in found:
            if (a, b) in inside:
                continue
            if at < a:
                ids += self.hf.encode(plain[at:a], add_special_tokens=False, split_special_tokens=True)
            ids.append(self.hf.convert_tokens_to_ids(plain[a:b]))
            at = b
        if at < len(plain):
            ids += self.hf.encode(plain[at:], add_special_tokens=False, split_special_tokens=True)
        if add_special_tokens:
            ids = self.hf.build_inputs_with_special_tokens(ids)
        return ids

    def has_control_text(self, text: str) -> bool:
        """Whether `text` spells a control token."""
        return self.controls.search(text) is not None

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(list(ids))

    def chat(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The chat template rendered as text, every message's content marked untrusted (tokenize it with
        `encode`; `unmark` gives the plain text). A template that changes content other than trimming it is
        refused: the marks could not say what is content."""
        if not self.hf.chat_template:
            raise CheckpointError(f"tokenizer {self.hf.name_or_path!r} has no chat template; add one to "
                             "tokenizer_config.json or chat_template.jinja")
        marked = [dict(m, content=untrusted(m["content"])) if isinstance(m.get("content"), str) else m
                  for m in messages]
        text = self.hf.apply_chat_template(marked, tokenize=False, add_generation_prompt=add_generation_prompt)
        plain = self.hf.apply_chat_template(list(messages), tokenize=False,
                                            add_generation_prompt=add_generation_prompt)
        try:
            same = unmark(text)[0] == plain
        except ValueError:
            same = False
        if not same:
            raise CheckpointError(f"tokenizer {self.hf.name_or_path!r}: its chat template changes message content "
                                  f"beyond trimming it, so monitored text cannot be kept apart from its control "
                                  f"tokens")
        return text

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
