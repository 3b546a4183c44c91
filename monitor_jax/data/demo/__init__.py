"""The embedded demo monitor suite: seeded, procedural, shipped in the package.

Synthetic stand-ins for the research's five domains (`domains.py`; `data/research.py`'s tasks read them) and a
small procedural instruction-following set (`instruction.py`), every row a sentence grammar filled from word
lists (`grammar.py`); the demo tokenizer trained on them (`tokenizer.py`); and the suite written out in the
`data_root` file layout (`files.py`). The bag-of-words baseline that shows the labels live in composition,
not keywords, is `benchmarks/bow_baseline.py`.

Rows are a pure function of (domain, split, seed). A text belongs to the train or the test split by a stable
hash of the text itself, so the splits never share a text, whatever the seeds. Importing this package
registers the research's tasks.
"""
from monitor_jax.data.demo.domains import DOMAINS, SIZES, demo_rows
from monitor_jax.data.demo.files import write_demo_jsonl
from monitor_jax.data.demo.grammar import AMBIGUOUS, SPLITS, TEST_BUCKETS
from monitor_jax.data.demo.instruction import INSTRUCTION_SIZES, instruction_rows
from monitor_jax.data.demo.tokenizer import TOKENIZER_TASKS, build_demo_tokenizer, demo_corpus

__all__ = ["AMBIGUOUS", "DOMAINS", "INSTRUCTION_SIZES", "SIZES", "SPLITS", "TEST_BUCKETS", "TOKENIZER_TASKS",
           "build_demo_tokenizer", "demo_corpus", "demo_rows", "instruction_rows", "write_demo_jsonl"]
