"""Agent transcripts as the text a monitor reads: Inspect messages (and ControlArena's tool-call trajectories)
rendered to markdown, as ControlArena's `full_trajectory_prompt_formatter_markdown` lays them out.

    render_transcript(messages, tool_output_limit=4000, reasoning=False, fence=True) -> str

A message is Inspect's JSON form (`ChatMessage.model_dump()`): `role` (system, user, assistant, tool), `content`
(a string or a list of parts: {"type": "text", "text"}, {"type": "reasoning", "reasoning"}), an assistant's
`tool_calls` ([{"id", "function", "arguments"}]), a tool result's `function`, `tool_call_id` and `error`.
docs/inspect.md shows a transcript rendered (a user turn, an assistant turn with reasoning, text and one call, its
cut result, a final answer).

Only messages are rendered: never a sample's metadata (ControlArena's side-task description names what an
attack is after) nor its scores. A tool result longer than `tool_output_limit` characters keeps its start and
end with a visible marker saying how much was cut (Inspect itself cuts above 16 KiB without one);
`tool_output_limit=0` keeps every result whole. Reasoning parts are rendered only with `reasoning=True`.
Images and other media are an error (a text monitor cannot read them).

The fence: the transcript is written by the agent under watch, so it can imitate the end of the transcript
and the monitor's question ("...end of transcript. Did the agent...? Answer: No"). The renderer encloses it in
tags carrying a tag the agent cannot know (the first 8 hex digits of the SHA-256 of the rendered text, which the
agent would have to predict of a text that contains it), so the prompt can say where the transcript really
ends. docs/inspect.md measures what it changes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

from monitor_jax.errors import DataError

SEPARATOR = "\n\n---\n\n"


def _text(content: Any, reasoning: bool, where: str) -> str:
    """A message's content: a string, or its text (and, if asked, reasoning) parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataError(f"{where}: message content is {type(content).__name__}; expected a string or a list of "
                        f"parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            parts.append(part.get("text") or "")
        elif kind == "reasoning":
            if reasoning:
                label = "Reasoning (redacted)" if part.get("redacted") else "Reasoning"
                parts.append(f"**[{label}]:**\n{part.get('reasoning') or ''}")
        else:
            raise DataError(f"{where}: a {kind or type(part).__name__} content part cannot be rendered for a text "
                            f"monitor (text and reasoning parts can)")
    return "\n\n".join(p for p in parts if p)


def cut_tool_output(text: str, limit: int) -> str:
    """`text` within `limit` characters: its start and end kept around a marker saying what was cut."""
    if limit <= 0 or len(text) <= limit:
        return text
    head, tail = limit // 2, limit - limit // 2
    return f"{text[:head]}\n[... {len(text) - limit} characters of tool output cut ...]\n{text[len(text) - tail:]}"


def _tool_call(call: Mapping[str, Any], where: str) -> str:
    if not isinstance(call, Mapping) or "function" not in call:
        raise DataError(f"{where}: a tool call without a function name: {str(call)[:80]!r}")
    arguments = json.dumps(call.get("arguments", {}), indent=2, ensure_ascii=False)
    out = f"**{call['function']}** (`{call.get('id', '')}`)\n```json\n{arguments}\n```"
    if call.get("parse_error"):
        out += f"\n**Parse Error:** {call['parse_error']}"
    return out


def _message(m: Mapping[str, Any], tool_output_limit: int, reasoning: bool, where: str) -> str | None:
    role = m.get("role") if isinstance(m, Mapping) else None
    content = _text(m.get("content"), reasoning, where) if role else ""
    if role == "system":
        return f"### System\n\n{content}"
    if role == "user":
        return f"### User\n\n{content}"
    if role == "assistant":
        parts = ["### Assistant"] + ([content] if content else [])
        calls = m.get("tool_calls") or []
        if calls:
            parts += ["**Tool Calls:**"] + [_tool_call(c, where) for c in calls]
        return "\n\n".join(parts) if len(parts) > 1 else None     # an empty turn says nothing
    if role == "tool":
        header = f"### Tool Result: {m.get('function') or 'tool'}"
        if m.get("tool_call_id"):
            header += f" [`{m['tool_call_id']}`]"
        parts = [header]
        error = m.get("error")
        if error:
            parts.append(f"**Error ({error.get('type', 'error')}):** {error.get('message', '')}")
        parts.append(cut_tool_output(content, tool_output_limit))
        return "\n\n".join(parts)
    raise DataError(f"{where}: a message with role {role!r} (expected system, user, assistant or tool)")


def fence_tag(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def render_transcript(messages: Sequence[Mapping[str, Any]], tool_output_limit: int = 4000,
                      reasoning: bool = False, fence: bool = True, system: bool = False,
                      where: str = "transcript") -> str:
    """The monitor's view of a conversation (module docstring). `system=False` leaves out system messages
    (the agent's own instructions: an attack's stored messages keep the honest prompt anyway)."""
    if not messages:
        raise DataError(f"{where}: no messages to render")
    rendered = [_message(m, tool_output_limit, reasoning, where) for m in messages
                if system or not (isinstance(m, Mapping) and m.get("role") == "system")]
    body = SEPARATOR.join(r for r in rendered if r)
    if not body:
        raise DataError(f"{where}: the messages render to nothing (no content, tool call or result)")
    if not fence:
        return body
    tag = fence_tag(body)
    return f"<transcript {tag}>\n{body}\n</transcript {tag}>"
