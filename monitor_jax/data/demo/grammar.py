"""The demo's sentence grammar engine: seeded draws, templates filled from word lists, the split a text falls in.

A grammar is a dict: `words` (slot name -> list of items), `parts` (part name -> templates with `{slot}`
fields), `cells` ((label, weight, parts): the parts rendered in order for a row of that label), `ambiguous`
(parts whose text does not decide the label) and optional `before` / `after` parts and `joiner`.

Rows are a pure function of (domain, split, seed): every draw comes from a generator seeded through crc32 of
text keys. A text belongs to the train or the test split by a stable hash of the text itself, so the splits
never share a text, whatever the seeds.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, TypeVar

import numpy as np

from monitor_jax.data import research
from monitor_jax.errors import DataError

_Drawn = TypeVar("_Drawn")

SPLITS = research.SPLITS
# Rows are seeded by each domain's name in the first version of the suite, so renaming a domain after the
# research's kept every row (and the demo tokenizer, and every figure measured on them) as it was.
SEED_NAMES = {"control_arena": "agent_danger", "imdb": "sentiment", research.INSTRUCTION: "demo_instruct"}
AMBIGUOUS = 0.06          # share of rows whose text does not decide the label
TEST_BUCKETS = 5          # a text is a test text iff crc32(text) % TEST_BUCKETS == 0


def _rng(*keys: Any) -> np.random.Generator:
    """A generator seeded from the keys' text through crc32: stable across processes (unlike hash())."""
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in keys])


def rows_rng(name: str, split: str, seed: int) -> np.random.Generator:
    """The generator every draw of one (domain or instruction set, split, seed)'s rows comes from."""
    return _rng("demo", SEED_NAMES.get(name, name), split, seed)


def split_of(text: str) -> str:
    return "test" if zlib.crc32(text.encode()) % TEST_BUCKETS == 0 else "train"


def pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


class _Slots(dict):
    """Fills `{name}` slots lazily, one choice per name per row.

    A trailing digit asks for another item of the same list: `{act2}` is an
    action different from `{act}`. Items may be dicts, read as `{act[cmd]}`.
    """

    def __init__(self, words: dict[str, list], rng: np.random.Generator):
        super().__init__()
        self.words, self.rng = words, rng

    def __missing__(self, name: str):
        base = name.rstrip("0123456789")
        taken = [v for k, v in self.items() if k.rstrip("0123456789") == base]
        value = pick(self.rng, [w for w in self.words[base] if w not in taken])
        self[name] = value
        return value


def _render(grammar: dict, parts: tuple[str, ...], rng: np.random.Generator) -> str:
    slots = _Slots(grammar["words"], rng)
    pieces: list[str] = []
    for part in parts:
        piece = pick(rng, grammar["parts"][part]).format_map(slots)
        if not piece:
            continue
        if pieces and piece[0] in ",.":   # punctuation parts close the previous clause
            pieces[-1] += piece
            continue
        if not pieces or pieces[-1][-1] in ".?!":
            piece = piece[0].upper() + piece[1:]
        pieces.append(piece)
    return grammar.get("joiner", " ").join(pieces)


def sample_text(grammar: dict, label: int, rng: np.random.Generator) -> str:
    if rng.random() < AMBIGUOUS:
        parts = pick(rng, grammar["ambiguous"])
    else:
        cells = [(w, parts) for lab, w, parts in grammar["cells"] if lab == label]
        weights = np.array([w for w, _ in cells], dtype=float)
        parts = cells[int(rng.choice(len(cells), p=weights / weights.sum()))][1]
    return _render(grammar, tuple(grammar.get("before", ())) + parts + tuple(grammar.get("after", ())), rng)


def balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    if n % 2:
        raise DataError(f"demo splits are exactly 50/50, so n must be even; got n={n}")
    return rng.permutation(np.repeat([1, 0], n // 2))


def size_of(split: str, n: int | None, sizes: dict[str, int]) -> int:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS}")
    return sizes[split] if n is None else n


def draw_in_split(split: str, draw: Callable[[], _Drawn],
                  text_of: Callable[[_Drawn], str] = lambda drawn: drawn) -> _Drawn:
    """Redraw until the text hashes into `split` (train and test then never share a text)."""
    while True:
        drawn = draw()
        if split_of(text_of(drawn)) == split:
            return drawn
