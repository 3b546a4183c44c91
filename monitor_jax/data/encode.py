"""Rows -> token ids, next-token targets, loss weights, label positions, segment ids.

Conventions (shared with the trainer and the scorer):
  tokens[t]   the input at t;   targets[t] the token to predict at t (tokens[t+1]);
  weights[t]  the loss weight of targets[t].
A classification row is its prompt only: the label token is the target at the
last prompt position (`label_position`), the one weight that is 1. Full logits
there are never needed: the trainer gathers the hidden state at that position.
An instruction row is a whole chat; its weights are 1 on targets that are
assistant tokens. An example stores its tokens, weights and label; its targets
follow from them (`Encoded.targets`, and `pack`, which builds every batch row the
trainer and the scorer read).

Truncation never drops the instructions, the answer position or the label: an
over-long classification prompt loses tokens from one side of its content field
only, and the example says it was truncated so runs can report counts per task.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from monitor_jax.data.tasks import (NO_LABEL_IDS, ClassificationTask, InstructionTask, LabelIds, TaskError,
                                    resolve_label_ids)
from monitor_jax.model.tokenizer import untrusted

CLASSIFICATION, INSTRUCTION = 1, 0
# transformers records {% generation %} spans on the compiled template, shared by
# every thread: concurrent renders (grain prefetch threads) corrupt each other's masks.
_TEMPLATE_LOCK = threading.Lock()


class HasLabelIds:
    """`positive_id` and `negative_id` of an object's `label_ids`."""
    label_ids: LabelIds

    @property
    def positive_id(self) -> int:
        return self.label_ids.positive

    @property
    def negative_id(self) -> int:
        return self.label_ids.negative


@dataclasses.dataclass
class Encoded(HasLabelIds):
    """One unpadded example: 1-D arrays of its own length n. Its label is stored once (`label`); the label's
    token, the target at the label position, follows from it and the task's `label_ids`."""
    tokens: np.ndarray
    weights: np.ndarray
    label_position: int = -1
    label: int = -1               # 1 positive, 0 negative, -1 none (instruction rows, unlabeled rows to score)
    label_ids: LabelIds = NO_LABEL_IDS   # the task's label tokens, shared by its examples
    task_id: int = 0
    kind: int = INSTRUCTION
    truncated: bool = False
    truncated_tokens: int = 0     # prompt tokens cut to fit max_length (0 when not truncated)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def label_id(self) -> int:
        """The token trained at the label position: the positive label's for label 1, else the negative's (an
        unlabeled row is only ever scored)."""
        return self.positive_id if self.label == 1 else self.negative_id

    @property
    def targets(self) -> np.ndarray:
        """targets[t], the token to predict at t: tokens[t + 1], and the label's token at a classification
        example's label position. An instruction example's last position predicts nothing (weight 0): 0 here,
        the pad id in a packed row."""
        targets = np.zeros(len(self), np.int32)
        targets[:-1] = self.tokens[1:]
        if self.kind == CLASSIFICATION:
            targets[self.label_position] = self.label_id
        return targets


def classification_example(ids: Sequence[int], label: int, label_ids: LabelIds, task_id: int = 0,
                           cut: int = 0) -> Encoded:
    """A prompt whose last position is its answer position: the label's token is the target there, with the
    example's one loss weight. `cut`: the prompt tokens truncation removed."""
    weights = np.zeros(len(ids), np.float32)
    weights[-1] = 1.0
    return Encoded(np.asarray(ids, np.int32), weights, label_position=len(ids) - 1, label=label,
                   label_ids=label_ids, task_id=task_id, kind=CLASSIFICATION, truncated=cut > 0,
                   truncated_tokens=cut)


class ClassificationEncoder(HasLabelIds):
    """Encodes rows of one classification task (labels checked once per task and tokenizer)."""

    def __init__(self, task: ClassificationTask, tokenizer, max_length: int, task_id: int = 0,
                 check_labels: bool = True):
        self.task, self.tok, self.max_length, self.task_id = task, tokenizer, max_length, task_id
        # check_labels=False: prompts only (thinking and summarization read their labels after the model writes).
        self.label_ids = resolve_label_ids(task, tokenizer) if check_labels else NO_LABEL_IDS
        empty = task.render(tokenizer, {f: "" for f in task.fields}, "(length check)")
        self.overhead = len(tokenizer.encode(empty))
        if self.overhead >= max_length:
            raise TaskError(f"task {task.name}: the prompt without content is {self.overhead} tokens, which does not "
                            f"fit max_length={max_length}; raise max_length or shorten the prompt")

    def prompt_ids(self, row: Mapping[str, Any], where: str = "") -> tuple[list[int], int]:
        """Prompt ids that fit max_length, and how many tokens the content field lost (0: none)."""
        task, tok = self.task, self.tok
        ids = tok.encode(task.render(tok, row, where))
        full_length = len(ids)
        if full_length <= self.max_length:
            return ids, 0
        if task.content_field not in task.fields:
            raise TaskError(f"task {task.name}: row {where} is {len(ids)} tokens > max_length={self.max_length} "
                            f"and content_field {task.content_field!r} is not in the prompt, so nothing may be cut")
        content = tok.encode(untrusted(str(row[task.content_field])))
        drop = len(ids) - self.max_length
        while True:  # re-tokenisation at the cut can shift counts by a token or two
            keep = content[drop:] if task.truncate_side == "left" else content[:len(content) - drop]
            ids = tok.encode(task.render(tok, {**row, task.content_field: tok.decode(keep)}, where))
            if len(ids) <= self.max_length:
                return ids, full_length - len(ids)
            drop += len(ids) - self.max_length

    def __call__(self, row: Mapping[str, Any], where: str = "", require_label: bool = True) -> Encoded:
        """`require_label=False` (scoring unlabeled rows): a row without the label field gets label -1."""
        if require_label or self.task.label_field in row:
            positive = int(self.task.label_of(row, where))
        else:
            positive = -1
        ids, cut = self.prompt_ids(row, where)
        return classification_example(ids, positive, self.label_ids, self.task_id, cut)


class InstructionEncoder:
    """Encodes chats; the loss falls on assistant tokens (end-of-turn token included)."""

    def __init__(self, task: InstructionTask, tokenizer, max_length: int, task_id: int = 0):
        self.task, self.tok, self.max_length, self.task_id = task, tokenizer, max_length, task_id
        self.has_generation_markers = "{% generation %}" in (tokenizer.hf.chat_template or "")

    def _ids_and_mask(self, msgs: list[dict], where: str) -> tuple[list[int], list[int]]:
        hf = self.tok.hf
        # The template's own assistant mask tokenizes the whole render (control strings in content would become
        # control tokens): used only where no content spells one.
        if self.has_generation_markers and not any(self.tok.has_control_text(str(m.get("content", "")))
                                                   for m in msgs):
            with _TEMPLATE_LOCK:
                out = hf.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
            return list(out["input_ids"]), list(out["assistant_masks"])
        # Templates without {% generation %} (most released ones): the assistant span
        # of turn i is what rendering messages[:i+1] adds to rendering messages[:i]
        # with the generation prompt.
        full = self.tok.encode(self.tok.chat(msgs))
        mask = [0] * len(full)
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            start = len(self.tok.encode(self.tok.chat(msgs[:i], add_generation_prompt=True)))
            end = len(self.tok.encode(self.tok.chat(msgs[:i + 1])))
            prefix = self.tok.encode(self.tok.chat(msgs[:i + 1]))
            if full[:end] != prefix:
                raise TaskError(f"task {self.task.name}: row {where}: the chat template does not render "
                                f"conversations prefix-consistently, so assistant tokens cannot be located; "
                                f"add {{% generation %}} markers to the template")
            while end > start and not self.tok.decode(full[end - 1:end]).strip():
                end -= 1   # the template's whitespace after the turn is not the assistant's to predict
            mask[start:end] = [1] * (end - start)
        return full, mask

    def __call__(self, row: Mapping[str, Any], where: str = "") -> Encoded:
        ids, mask = self._ids_and_mask(self.task.chat(row, where), where)
        cut = max(len(ids) - self.max_length, 0)
        truncated = cut > 0
        if truncated:  # keep the beginning of the conversation; the cut tail is counted
            ids, mask = ids[:self.max_length], mask[:self.max_length]
        weights = np.asarray(mask[1:] + [0], np.float32)   # weight of targets[t] = mask of tokens[t+1]
        if weights.sum() == 0:
            if truncated:
                raise TaskError(f"task {self.task.name}: row {where} has no assistant token within max_length="
                                f"{self.max_length}; raise max_length or filter the row")
            raise TaskError(f"task {self.task.name}: row {where}: the chat template marks no assistant token "
                            f"(is an assistant turn empty?)")
        return Encoded(np.asarray(ids, np.int32), weights, task_id=self.task_id, kind=INSTRUCTION,
                       truncated=truncated, truncated_tokens=cut)


# ------------------------------------------------------------------ fixed shapes
EXAMPLE_FIELDS = ("tokens", "targets", "weights", "segment_ids", "positions", "label_position", "label",
                  "positive_id", "negative_id", "task_id", "kind", "truncated")
# Per-example fields: one value per row, or `slots` values per row when classification rows are packed.
LABEL_FIELDS = ("label_position", "label", "positive_id", "negative_id")


def _empty_row(length: int, pad_id: int, slots: int = 0) -> dict[str, np.ndarray]:
    per_example = (lambda v: np.full(slots, v, np.int32)) if slots else np.int32  # noqa: E731
    return dict(tokens=np.full(length, pad_id, np.int32), targets=np.full(length, pad_id, np.int32),
                weights=np.zeros(length, np.float32), segment_ids=np.zeros(length, np.int32),
                positions=np.zeros(length, np.int32), label_position=per_example(-1), label=per_example(-1),
                positive_id=per_example(0), negative_id=per_example(0), task_id=np.int32(0),
                kind=np.int32(INSTRUCTION), truncated=np.int32(0))


def batch_template(batch_size: int, length: int, pad_id: int = 0, slots: int = 0) -> dict[str, np.ndarray]:
    """A training batch's fields, shapes and dtypes ([batch_size, ...] of empty rows): what the step is compiled
    for (the planner compiles it without data)."""
    return {k: np.stack([v] * batch_size) for k, v in _empty_row(length, pad_id, slots).items()}


def pad(example: Encoded, length: int, pad_id: int, slots: int = 0) -> dict[str, np.ndarray]:
    """A fixed-length row: right padding with segment id 0 and weight 0. `slots` > 0: the per-example fields
    are [slots] arrays (the batch layout of a run with packed classification rows), this example in slot 0."""
    return pack([example], length, pad_id, slots) if slots else _pack([example], length, pad_id, 0)


def pack(examples: Sequence[Encoded], length: int, pad_id: int, slots: int = 0) -> dict[str, np.ndarray]:
    """Examples of one kind back to back in one row: segment ids 1..k, positions restart. The rows of training
    batches and of the scorer's batches are built here.

    Instruction rows: each segment's last target is its own shifted pad (weight 0), so no token is ever
    trained to predict the next segment's first token. Classification rows (`slots` >= k, one task): each
    example keeps its own label position (offset into the row) and label in its slot; empty slots have label
    -1 and are masked out of the loss. No examples: a padding row (segment id 0, every slot empty).
    """
    if not examples:
        return _empty_row(length, pad_id, slots)
    kinds = {ex.kind for ex in examples}
    if len(kinds) != 1:
        raise ValueError("a packed row holds examples of one kind")
    if CLASSIFICATION in kinds:
        if len(examples) > slots:
            raise ValueError(f"{len(examples)} classification examples do not fit {slots} label slots")
        if len({ex.task_id for ex in examples}) != 1:
            raise ValueError("a packed classification row holds examples of one task")
    return _pack(examples, length, pad_id, slots)


def _pack(examples: Sequence[Encoded], length: int, pad_id: int, slots: int) -> dict[str, np.ndarray]:
    row = _empty_row(length, pad_id, slots)
    at = 0
    for k, ex in enumerate(examples):
        n = len(ex)
        if at + n > length:
            raise ValueError(f"packed examples need {at + n} tokens > length {length}"
                             if len(examples) > 1 else f"example of {n} tokens does not fit length {length}")
        row["tokens"][at:at + n] = ex.tokens
        row["targets"][at:at + n - 1] = ex.tokens[1:]    # the last target: the label's token, or padding
        row["weights"][at:at + n] = ex.weights
        row["segment_ids"][at:at + n] = k + 1
        row["positions"][at:at + n] = np.arange(n)
        if ex.kind == CLASSIFICATION:
            row["targets"][at + ex.label_position] = ex.label_id
            values = (at + ex.label_position, ex.label, ex.positive_id, ex.negative_id)
            for field, value in zip(LABEL_FIELDS, values):
                if slots:
                    row[field][k] = value
                else:
                    row[field] = np.int32(value)
        at += n
    row.update(task_id=np.int32(examples[0].task_id), kind=np.int32(examples[0].kind),
               truncated=np.int32(sum(ex.truncated for ex in examples)))
    return row
