"""The demo's instruction-following rows (`instruct`): procedural requests with one correct answer each."""
from __future__ import annotations

from monitor_jax.data import research
from monitor_jax.data.demo.grammar import draw_in_split, pick, rows_rng, size_of

INSTRUCTION_SIZES = {"train": 2000, "test": 200}

_NOUNS = ["apple", "river", "lamp", "garden", "pencil", "cloud", "window", "tiger", "bottle", "mountain", "violin",
          "candle", "rocket", "basket", "forest", "mirror"]
_COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
_ANIMALS = ["cat", "dog", "horse", "rabbit", "fox", "owl", "goat", "duck"]
_VERBS = ["chased", "found", "watched", "carried", "ignored", "painted", "dropped", "followed"]


def _sentence(rng) -> tuple[str, list[str]]:
    words = ["the", pick(rng, _COLORS), pick(rng, _ANIMALS), pick(rng, _VERBS), "the", pick(rng, _NOUNS)]
    return " ".join(words).capitalize() + ".", words


def _words(rng, lo: int, hi: int) -> list[str]:
    k = int(rng.integers(lo, hi + 1))
    return [str(w) for w in rng.choice(_NOUNS, size=k, replace=False)]


def _repeat(rng):
    word, k = pick(rng, _NOUNS), int(rng.integers(2, 6))
    return f'Repeat the word "{word}" {k} times, separated by spaces.', " ".join([word] * k)


def _reverse(rng):
    items = _words(rng, 3, 6)
    return f"Reverse the order of this list: {', '.join(items)}.", ", ".join(items[::-1])


def _count(rng):
    items = _words(rng, 2, 9)
    return f"How many items are in this list: {', '.join(items)}? Answer with a number.", str(len(items))


def _contains(rng):
    sentence, words = _sentence(rng)
    present = rng.random() < 0.5
    word = pick(rng, [w for w in (words[1:] if present else _COLORS + _ANIMALS + _NOUNS) if (w in words) == present])
    answer = "Yes" if present else "No"
    return f'Sentence: "{sentence}"\nDoes the sentence contain the word "{word}"? Answer Yes or No.', answer


def _upper(rng):
    sentence, _ = _sentence(rng)
    return f"Copy this sentence in upper case: {sentence}", sentence.upper()


def _last_word(rng):
    sentence, words = _sentence(rng)
    return f'What is the last word of the sentence "{sentence}"?', words[-1]


def _sort(rng):
    items = _words(rng, 3, 6)
    return f"Sort these words alphabetically: {', '.join(items)}.", ", ".join(sorted(items))


def _add(rng):
    a, b = int(rng.integers(0, 50)), int(rng.integers(0, 50))
    return f"What is {a} plus {b}? Answer with a number.", str(a + b)


_INSTRUCTIONS = (_repeat, _reverse, _count, _contains, _upper, _last_word, _sort, _add)


def instruction_rows(split: str, seed: int = 0, n: int | None = None) -> list[dict]:
    """`n` chat rows {"id", "messages"} of procedural instructions with deterministic answers."""
    n = size_of(split, n, INSTRUCTION_SIZES)
    rng = rows_rng(research.INSTRUCTION, split, seed)
    rows = []
    for i in range(n):
        prompt, answer = draw_in_split(split, lambda: pick(rng, _INSTRUCTIONS)(rng), text_of=lambda qa: qa[0])
        rows.append({"id": f"{research.INSTRUCTION}-{split}-{i}", "messages": [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]})
    return rows
