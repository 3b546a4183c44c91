"""Tasks: how a data row becomes a prompt and a target.

A `ClassificationTask` renders a row through a prompt (chat messages with
`{field}` slots) and the tokenizer's chat template with the generation prompt;
its target is one token, the positive or the negative label. An
`InstructionTask` is a chat whose assistant turns carry the loss. Tasks are
registered by name so configs name them; the prompt-change experiment is the
same source under another task.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Mapping, NamedTuple, Sequence

from monitor_jax.errors import TaskError  # noqa: F401  (re-exported for callers)

# Row label values accepted as positive / negative unless a task gives its own map.
DEFAULT_LABELS: tuple[tuple[Any, bool], ...] = ((True, True), (False, False), (1, True), (0, False))


class LabelIds(NamedTuple):
    """A classification task's label tokens for one tokenizer."""
    positive: int
    negative: int


NO_LABEL_IDS = LabelIds(0, 0)   # examples without label tokens: instruction rows, prompts whose labels come later


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    name: str
    domain: str
    messages: tuple[tuple[str, str], ...]   # (role, template with {field} slots)
    # What chat models write after the generation prompt (ChatML, Llama 3 and Gemma templates end it in a
    # newline): "Yes", not " Yes". docs/tasks.md says why it matters.
    positive: str = "Yes"
    negative: str = "No"
    answer_prefix: str = ""                 # appended after the generation prompt, before the label
    # Thinking mode (eval items with "mode": "thinking"): the prompt asks for reasoning, then this marker and
    # the label; the label is read right after the marker, so with "Answer:" the labels are " Yes" / " No".
    answer_marker: str = ""
    label_field: str = "label"
    labels: tuple[tuple[Any, bool], ...] = DEFAULT_LABELS   # row value -> positive?
    content_field: str = "text"             # the field truncation shortens
    truncate_side: str = "left"             # drop the start (left) or the end (right) of the content

    def __post_init__(self):
        if self.truncate_side not in ("left", "right"):
            raise TaskError(f"task {self.name}: truncate_side={self.truncate_side!r}; choose left or right")
        if self.positive == self.negative:
            raise TaskError(f"task {self.name}: positive and negative labels are both {self.positive!r}")

    @property
    def fields(self) -> list[str]:
        import string

        return sorted({f for _, t in self.messages for _, f, _, _ in string.Formatter().parse(t) if f})

    def label_of(self, row: Mapping[str, Any], where: str = "") -> bool:
        """The row's label as positive (True) or negative (False); anything else is an error."""
        if self.label_field not in row:
            raise TaskError(f"task {self.name}: row {where} has no label field {self.label_field!r}; "
                            f"fields present: {sorted(row)}")
        value = row[self.label_field]
        for key, positive in self.labels:
            if type(key) is type(value) and key == value:
                return positive
        raise TaskError(f"task {self.name}: row {where} has {self.label_field}={value!r}, which is not one of "
                        f"the task's label values {[k for k, _ in self.labels]}")

    def chat(self, row: Mapping[str, Any], where: str = "") -> list[dict[str, str]]:
        missing = [f for f in self.fields if f not in row]
        if missing:
            raise TaskError(f"task {self.name}: row {where} lacks field(s) {missing} its prompt uses; "
                            f"fields present: {sorted(row)}")
        for f in self.fields:   # a list or null would render as its Python repr: never what was meant
            if isinstance(row[f], bool) or not isinstance(row[f], (str, int, float)):
                raise TaskError(f"task {self.name}: row {where} field {f!r} is {type(row[f]).__name__} "
                                f"{str(row[f])[:40]!r}; the prompt needs text")
        return [{"role": role, "content": template.format_map({f: row[f] for f in self.fields})}
                for role, template in self.messages]

    def render(self, tokenizer, row: Mapping[str, Any], where: str = "") -> str:
        """Prompt text up to (not including) the label token."""
        return tokenizer.chat(self.chat(row, where), add_generation_prompt=True) + self.answer_prefix

    def label_ids(self, tokenizer, example_row: Mapping[str, Any]) -> LabelIds:
        """(positive id, negative id): each label must be exactly one token after the rendered prompt
        (`resolve_label_ids` is what the encoders call: checked once per task and tokenizer)."""
        prompt = self.render(tokenizer, example_row, "(label check)")
        prompt_ids = tokenizer.encode(prompt)
        ids = []
        for label in (self.positive, self.negative):
            full = tokenizer.encode(prompt + label)
            extra = full[len(prompt_ids):]
            if full[:len(prompt_ids)] != prompt_ids or len(extra) != 1:
                shown = tokenizer.tokens(extra if full[:len(prompt_ids)] == prompt_ids else full[-4:])
                raise TaskError(f"task {self.name}: label {label!r} is not one token after the prompt; it "
                                f"tokenizes to {shown} (ids {extra}). Choose a label string that is a single "
                                f"token in context (mind the leading space), or change answer_prefix.")
            ids.append(extra[0])
        if ids[0] == ids[1]:
            raise TaskError(f"task {self.name}: labels {self.positive!r} and {self.negative!r} are the same token")
        return LabelIds(ids[0], ids[1])


# tokenizer -> {(task, after_marker): its label ids}; entries go with their tokenizer.
_LABEL_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def resolve_label_ids(task: ClassificationTask, tokenizer, after_marker: bool = False) -> LabelIds:
    """The task's label token ids for `tokenizer`, checked where the model writes the label: right after the
    prompt (generation prompt, then answer_prefix), or, `after_marker` (thinking mode), right after the task's
    answer marker. Each label must be one token there and the two must differ: a TaskError otherwise.

    Checked once per task and tokenizer: the classification encoder, the thinking encoder and the config's
    check of its own tasks (assemble.check_inline_labels) share the result.
    """
    try:
        cache = _LABEL_IDS.setdefault(tokenizer, {})
    except TypeError:   # a tokenizer object that takes no weak reference: checked on every call
        cache = {}
    key = (task, after_marker)
    if key not in cache:
        scored = dataclasses.replace(task, answer_prefix=task.answer_marker) if after_marker else task
        cache[key] = scored.label_ids(tokenizer, {f: "x" for f in task.fields})
    return cache[key]


@dataclasses.dataclass(frozen=True)
class InstructionTask:
    name: str
    messages_field: str = "messages"        # a list of {"role", "content"}
    domain: str = "instruction"

    def chat(self, row: Mapping[str, Any], where: str = "") -> list[dict[str, str]]:
        msgs = row.get(self.messages_field)
        if not isinstance(msgs, Sequence) or not msgs or not all(
                isinstance(m, Mapping) and "role" in m and "content" in m for m in msgs):
            raise TaskError(f"task {self.name}: row {where} field {self.messages_field!r} must be a non-empty "
                            f"list of {{'role', 'content'}} messages; fields present: {sorted(row)}")
        if not all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in msgs):
            raise TaskError(f"task {self.name}: row {where} field {self.messages_field!r}: every message's role "
                            f"and content must be strings")
        if not any(m["role"] == "assistant" for m in msgs):
            raise TaskError(f"task {self.name}: row {where} has no assistant turn, so nothing to learn from")
        return [{"role": m["role"], "content": m["content"]} for m in msgs]


Task = ClassificationTask | InstructionTask
_REGISTRY: dict[str, Task] = {}


def register(task: Task, overwrite: bool = False) -> Task:
    if task.name in _REGISTRY and _REGISTRY[task.name] != task and not overwrite:
        raise TaskError(f"task name {task.name!r} is already registered with a different definition")
    _REGISTRY[task.name] = task
    return task


def get(name: str) -> Task:
    """A registered task. Modules register their tasks when imported (the demo suite: monitor_jax.data.demo;
    monitor_jax.assemble.TASK_LIBRARIES lists the ones a run imports)."""
    if name not in _REGISTRY:
        raise TaskError(f"unknown task {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registered() -> list[str]:
    return sorted(_REGISTRY)


def with_prompt(task: ClassificationTask, name: str, messages: Sequence[tuple[str, str]], **changes
                ) -> ClassificationTask:
    """The same data under another prompt: the prompt-change experiment."""
    return dataclasses.replace(task, name=name, messages=tuple(tuple(m) for m in messages), **changes)


# ------------------------------------------------------------------ tasks written in a config
ROLES = ("system", "user", "assistant")
SPEC_KEYS = {
    "classification": {"name", "kind", "domain", "messages", "positive", "negative", "answer_prefix",
                       "answer_marker", "label_field", "labels", "content_field", "truncate_side"},
    "instruction": {"name", "kind", "domain", "messages_field"},
}


def _message(m: Any, where: str) -> tuple[str, str]:
    """(role, template) from [role, template] or {"role", "content"}; every slot must be a plain field name."""
    import string

    if isinstance(m, Mapping) and set(m) == {"role", "content"}:
        m = (m["role"], m["content"])
    if not (isinstance(m, Sequence) and not isinstance(m, str) and len(m) == 2
            and all(isinstance(x, str) for x in m)):
        raise TaskError(f"{where}={m!r} must be [role, template] or {{'role': ..., 'content': ...}}")
    role, template = m
    if role not in ROLES:
        raise TaskError(f"{where}: role {role!r}; choose one of {ROLES}")
    try:
        slots = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise TaskError(f"{where}: {e} in {template!r} (write a literal brace as {{{{ or }}}})") from None
    for f, spec, conv in slots:
        if not f.isidentifier() or spec or conv:
            shown = "{" + f + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise TaskError(f"{where}: the slot {shown} names no row field; slots are plain field names like "
                            f"{{text}}")
    return role, template


def from_spec(spec: Mapping[str, Any], where: str = "task") -> Task:
    """A task from a config dict (`tasks` items, docs/tasks.md); a bad key is a TaskError naming it."""
    spec = dict(spec)
    kind = spec.get("kind", "classification")
    if kind not in SPEC_KEYS:
        raise TaskError(f"{where}.kind={kind!r}; choose one of {sorted(SPEC_KEYS)}")
    unknown = sorted(set(spec) - SPEC_KEYS[kind])
    if unknown:
        raise TaskError(f"{where} has unknown key(s) {unknown}; a {kind} task takes {sorted(SPEC_KEYS[kind])}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise TaskError(f"{where}.name={name!r} must be a non-empty string")
    for key in set(spec) - {"messages", "labels"}:
        if not isinstance(spec[key], str):
            raise TaskError(f"{where}.{key}={spec[key]!r} must be a string")
    spec.pop("kind", None)
    if kind == "instruction":
        return InstructionTask(**spec)
    messages = spec.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise TaskError(f"{where}.messages={messages!r} must be a non-empty list of [role, template]")
    spec["messages"] = tuple(_message(m, f"{where}.messages[{j}]") for j, m in enumerate(messages))
    if "labels" in spec:
        labels = spec["labels"]
        if not (isinstance(labels, Sequence) and labels and all(
                isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 and isinstance(p[1], bool)
                and isinstance(p[0], (str, int, bool)) for p in labels)):
            raise TaskError(f"{where}.labels={labels!r} must be a list of [row value, is positive (true/false)]")
        if {p[1] for p in labels} != {True, False}:
            raise TaskError(f"{where}.labels={labels!r} must map some row value to each of true and false")
        spec["labels"] = tuple((p[0], p[1]) for p in labels)
    spec.setdefault("domain", name)
    task = ClassificationTask(**spec)
    if not task.fields:
        raise TaskError(f"{where}.messages: the prompt has no {{field}} slot, so every row would read the same")
    return task
