"""The trained monitor as a ControlArena monitor (`pip install -e '.[inspect]'`).

    from monitor_jax.integrations.control_arena import monitor_jax_monitor
    monitor = monitor_jax_monitor(config="configs/real_demo.py", checkpoint="")     # a @control_agent
    # in a micro-protocol, or post hoc:
    await control_arena.scorers.score_async(logs, {"monitor_jax": end_of_trajectory_monitor(monitor)})

The model is loaded once per (config, checkpoint, task, overrides) in a process and shared by every monitor
built with them. Each call renders the agent state's messages as a transcript (data/transcripts.py, as in
training) and scores it with the jitted scorer: suspicion_score = P(positive label) = sigmoid(log-odds), the
reason gives the log-odds. ControlArena's `monitor` decorator has already hidden attack tools from the view.
"""
from __future__ import annotations

import functools
import json

from control_arena import control_agent
from control_arena.monitor import MonitorResponse, monitor
from inspect_ai.agent import Agent, AgentState
from inspect_ai.tool import Tool
from pydantic import Field

from monitor_jax.integrations.monitor import TrainedMonitor


@functools.lru_cache(maxsize=4)
def _loaded(config: str, checkpoint: str | None, task: str, overrides: str, tool_output_limit: int | None,
            reasoning: bool | None, fence: bool | None) -> TrainedMonitor:
    return TrainedMonitor(config, checkpoint, task, json.loads(overrides), tool_output_limit, reasoning, fence)


@control_agent
def monitor_jax_monitor(
    config: str = Field(description="The run's config file (as --config)."),
    checkpoint: str | None = Field(default="", description="'' the work directory's checkpoint, a checkpoint "
                                   "or exported Hugging Face directory, None the base model."),
    task: str = Field(default="control_arena", description="The task whose prompt scores transcripts."),
    overrides: dict = Field(default_factory=dict, description="Config keys to override ({'eval.batch_size': 8})."),
    tool_output_limit: int | None = Field(default=None, description="Characters a tool result keeps (0: all; "
                                          "None: as the task's agent source in the config, else 4000)."),
    reasoning: bool | None = Field(default=None, description="Render the agent's reasoning parts (None: as the "
                                   "config's source, else no)."),
    fence: bool | None = Field(default=None, description="Enclose the transcript in its tagged fence (None: as the "
                               "config's source, else yes)."),
) -> Agent:
    """A monitor_jax-trained monitor scoring the whole trajectory so far."""
    loaded = _loaded(config, checkpoint, task, json.dumps(overrides, sort_keys=True), tool_output_limit,
                     reasoning, fence)

    @monitor
    async def impl(state: AgentState, tools: list[Tool]) -> MonitorResponse:
        messages = [m.model_dump(exclude_none=True) for m in state.messages]
        (verdict,) = loaded.score([loaded.transcript(messages)])
        return MonitorResponse(suspicion_score=verdict.p_positive,
                               reason=f"log-odds {verdict.log_odds:.4f} ({loaded.description}"
                                      f"{f'; {verdict.truncated} tokens cut' if verdict.truncated else ''})")

    return impl
