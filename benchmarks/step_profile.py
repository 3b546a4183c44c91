"""Where the time of one classification train step goes: our JAX step and the transformers + PyTorch peer.

    python -m benchmarks.step_profile [--vocab 151936 --embed 256 --layers 4 --batch 8 --length 256 --reps 5]

Same model, batch, float32 and threads as benchmarks/train_step.py's (a) and (d) rows: our classification step
(`make_train_step`, `LossConfig(instruction=False)`, `jit_train_step`) and Qwen3ForCausalLM with left padding,
`logits_to_keep=1`, cross-entropy and AdamW. Prints
1. the step in phases, each timed alone: forward to the loss, forward + backward, the AdamW update alone, the
   full step; and the parameters split into the [V, D] (un)embeddings and the rest, with the memory traffic
   AdamW must move over them at this machine's measured bandwidth;
2. the top ops of a real profile of the full step: XLA CPU thunk events from a `jax.profiler.trace` (grouped
   also by kind: dot, scatter/gather, reduce, copy/transpose, elementwise fusion), and `torch.profiler`'s
   `key_averages()` by self CPU time;
3. per framework, the step's share in matmuls vs memory-bound work (AdamW, the embedding-gradient scatter,
   other elementwise ops and copies);
4. the backward's hot spots alone (a SwiGLU MLP layer, the label-position readout), forward + backward, in
   our weight layout, in PyTorch's, and in PyTorch.
"""
from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.common import one_device_mesh, print_header, seconds
from benchmarks.train_step import (batch_of, hf_model, matmul_peak, model_config, model_flags, step_flops, time_hf,
                                   time_ours)
from monitor_jax.model import ModelConfig, abstract_model
from monitor_jax.train.step import LossConfig, batch_counts, make_micro_loss

TOP = 12
ADAMW_BYTES = 7 * 4   # float32 AdamW reads param, grad, mu, nu and writes param, mu, nu: 7 words a parameter


def stream_bandwidth(n: int = 2 ** 24, reps: int = 10) -> float:
    """Bytes / s of a jitted x += y over float32 arrays far larger than the caches (reads 2, writes 1), x donated
    so it is written in place, as a donated AdamW update writes its parameters and moments."""
    xy = [jnp.ones((n,), jnp.float32), jnp.ones((n,), jnp.float32)]
    add = jax.jit(lambda a, b: a + b, donate_argnums=0)

    def one_add():
        xy[0] = add(*xy)
        return xy[0]

    return 3 * 4 * n / seconds(one_add, reps)


# ----------------------------------------------------------------------------------------------- ours: phases
def make_loss(cfg: ModelConfig):
    """The classification step's own loss (train/step.py: make_micro_loss with instruction=False, one
    micro-batch, both weights 1), so its forward and gradient can be timed alone."""
    micro_loss = make_micro_loss(nnx.graphdef(abstract_model(cfg)), LossConfig(instruction=False))

    def loss(params, batch):
        return micro_loss(params, nnx.State({}), batch, *batch_counts(batch), 1.0, 1.0)[0]

    return loss


def phases_ours(cfg: ModelConfig, state, batch: dict, reps: int) -> dict:
    """Forward to the loss, forward + backward, and the AdamW update alone. Consumes `state` (donated last)."""
    loss = make_loss(cfg)
    forward = jax.jit(loss)
    forward_backward = jax.jit(jax.value_and_grad(loss))
    out = dict(forward=seconds(lambda: forward(state.params, batch), reps),
               forward_backward=seconds(lambda: forward_backward(state.params, batch), reps))
    _, grads = forward_backward(state.params, batch)
    optimizer = optax.adamw(1e-4)

    def update(grads, params, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # Parameters and moments donated as the step donates its state, so the update writes them in place.
    donated = jax.jit(update, donate_argnums=(1, 2))
    carry = [state.params, state.opt_state]

    def one_update():
        carry[:] = donated(grads, *carry)
        return carry[0]

    out["optimizer"] = seconds(one_update, reps)
    return out


# ----------------------------------------------------------------------------------------------- ours: profile
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([\w.\-]+) = .*?([a-z][a-z0-9\-]*)\(")
_SHAPE = re.compile(r"= \w+\[([\d,]*)\]")
_CONTROL = {"while", "conditional", "call"}   # thunks whose events enclose their body's thunks
_LAYOUT = {"copy", "transpose", "bitcast", "reshape", "parameter", "constant", "broadcast", "slice", "concatenate",
           "dynamic-slice", "dynamic-update-slice", "pad", "tuple", "get-tuple-element", "iota"}


def parse_hlo(text: str) -> tuple[str, dict]:
    """(module name, {instruction: (kind, output dims, JAX op_name, operands)}) from a compiled module's HLO
    text; a fusion's kind comes from the instructions of the computations it calls (a dot fusion is a matmul)."""
    module = re.match(r"HloModule ([\w.\-]+)", text).group(1)
    computations, instructions, current = collections.defaultdict(list), {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):   # a computation's header
            current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            continue
        m = _INSTRUCTION.match(line)
        if not m or current is None:
            continue
        calls = re.search(r"calls=(\{[^}]*\}|%[\w.\-]+)", line)
        called = re.findall(r"%([\w.\-]+)", calls.group(1)) if calls else []
        computations[current].append((m.group(2), called))
        shape = _SHAPE.search(line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        target = re.search(r'custom_call_target="([^"]*)"', line)
        operands = re.findall(r"%([\w.\-]+)", line[m.end():].split(")", 1)[0])
        instructions[m.group(1)] = (m.group(2), called,
                                    tuple(int(d) for d in shape.group(1).split(",") if d) if shape else (),
                                    op_name.group(1) if op_name else "", target.group(1) if target else "", operands)

    def opcodes(computation: str) -> set:
        """Every opcode in a computation and the computations it calls (nested fusions)."""
        ops = set()
        for opcode, called in computations[computation]:
            ops.add(opcode)
            for inner in called:
                ops |= opcodes(inner)
        return ops

    info = {}
    for name, (opcode, called, dims, op_name, target, operands) in instructions.items():
        ops = {opcode}.union(*map(opcodes, called)) if opcode == "fusion" else {opcode}
        if opcode in _CONTROL:
            kind = "control flow"
        elif ops & {"dot", "convolution"} or (opcode == "custom-call" and re.search("matmul|gemm|dot", target)):
            kind = "matmul (dot)"
        elif ops & {"scatter", "gather"}:
            kind = "scatter/gather"
        elif ops & {"reduce", "reduce-window"}:
            kind = "reduce"
        elif ops <= _LAYOUT | {"fusion"}:
            kind = "copy/transpose"
        elif opcode == "fusion":
            kind = "elementwise fusion"
        else:
            kind = "other"
        info[name] = (kind, dims, op_name, operands)
    return module, info


def xla_op_events(trace_dir: str, module: str) -> tuple[list, collections.Counter, list]:
    """[(hlo op, start ns, duration ns)] of the module's thunk events in the trace (events carrying an `hlo_op`
    stat; the 'end: ...' completion markers carry none), where they were found (plane: thread pool), and the
    names of all the trace's planes."""
    events, where, planes = [], collections.Counter(), []
    for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
        for plane in jax.profiler.ProfileData.from_file(path).planes:
            planes.append(plane.name)
            for line in plane.lines:
                for ev in line.events:
                    stats = dict(ev.stats)
                    if "hlo_op" in stats and stats.get("hlo_module") == module:
                        events.append((stats["hlo_op"], ev.start_ns, ev.duration_ns))
                        where[f"{plane.name}: {line.name.split('/')[0]}"] += 1
    return events, where, planes


def covered_ns(intervals) -> float:
    """Length of the union of [start, start + duration) intervals: the wall time in which some op ran."""
    total, end = 0.0, -float("inf")
    for start, duration in sorted(intervals):
        if start + duration > end:
            total += start + duration - max(start, end)
            end = start + duration
    return total


def profile_ours(jitted, state, batch: dict, steps: int):
    """Trace `steps` full steps; (state, per-op rows, trace facts). Each row: (op, kind, JAX op_name, in the
    scan (forward + backward) or not, output dims, operands, ns per step)."""
    compiled = jitted.lower(state, batch).compile()
    module, info = parse_hlo(compiled.as_text())
    with tempfile.TemporaryDirectory(prefix="step_profile_") as trace_dir:
        with jax.profiler.trace(trace_dir):
            t0 = time.perf_counter()
            for _ in range(steps):
                state, metrics = jitted(state, batch)
            jax.block_until_ready(metrics)
            traced_s = (time.perf_counter() - t0) / steps
        events, where, planes = xla_op_events(trace_dir, module)
    # A control-flow thunk's event encloses its body's thunks, which are counted themselves.
    events = [e for e in events if info.get(e[0], ("",))[0] != "control flow"]
    per_op = collections.defaultdict(float)
    for op, _, duration in events:
        per_op[op] += duration / steps
    rows = []
    for op, ns in per_op.items():
        kind, dims, op_name, operands = info.get(op, ("unknown (not in the HLO text)", (), "", []))
        rows.append((op, kind, op_name, "/while/" in op_name, dims, operands, ns))
    rows.sort(key=lambda r: -r[-1])
    facts = dict(module=module, where=where, planes=planes, traced_s=traced_s, events=len(events),
                 covered_s=covered_ns([(s, d) for _, s, d in events]) / steps / 1e9, cost=compiled.cost_analysis())
    return state, rows, facts


def short_op_name(op_name: str, width: int = 64) -> str:
    """The JAX op behind an HLO op, without the jit and scan wrappers every op of the step shares."""
    name = re.sub(r"^jit\([\w]+\)/", "", op_name).replace("while/body/closed_call/", "")
    return name if len(name) <= width else name[:width - 1] + "…"


# ----------------------------------------------------------------------------------------------- the peer
def hf_peer(cfg: ModelConfig, b: int, t: int):
    """train_step.py's (d): Qwen3ForCausalLM, AdamW, left-padded rows ending at the label, logits_to_keep=1;
    (model, optimizer, forward-to-loss, full step)."""
    import torch

    model, opt = hf_model(cfg)
    ids_BxT = torch.tensor(batch_of("cls", b, t, cfg.vocab_size)["tokens"], dtype=torch.long)
    mask_BxT = torch.ones_like(ids_BxT)
    target_B = torch.full((b,), 5, dtype=torch.long)

    def forward():
        logits_BxV = model(input_ids=ids_BxT, attention_mask=mask_BxT, logits_to_keep=1).logits[:, -1]
        return torch.nn.functional.cross_entropy(logits_BxV, target_B)

    def step():
        opt.zero_grad()
        with torch.profiler.record_function("step.forward"):
            loss = forward()
        with torch.profiler.record_function("step.backward"):
            loss.backward()
        opt.step()

    return model, opt, forward, step


def phases_hf(opt, forward, reps: int) -> dict:
    def forward_backward():
        opt.zero_grad()   # grads set to None, as the step does, so backward allocates them afresh
        forward().backward()

    out = dict(forward=seconds(forward, reps), forward_backward=seconds(forward_backward, reps))
    out["optimizer"] = seconds(opt.step, reps)   # the grads the last backward left
    return out


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}


def torch_phase(event) -> str:
    """Which part of the step an op ran in, from its enclosing profiler ranges."""
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    if any(n.startswith("Optimizer.step") for n in names):
        return "optimizer"
    if any("EmbeddingBackward" in n or n == "aten::embedding_dense_backward" for n in names):
        return "embedding grad"
    if any(n == "step.backward" or n.startswith("autograd::engine") for n in names):
        return "backward"
    if any(n == "step.forward" for n in names):
        return "forward"
    return "zero_grad / other"


def profile_hf(step, steps: int):
    """(key_averages rows sorted by self CPU time, {op: {phase: self µs}}, traced wall s / step) over `steps`
    profiled full steps."""
    import torch
    from torch.profiler import ProfilerActivity

    step()
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        traced_s = (time.perf_counter() - t0) / steps
    by_phase = collections.defaultdict(collections.Counter)
    for event in prof.events():
        by_phase[event.name][torch_phase(event)] += event.self_cpu_time_total
    averages = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return averages, by_phase, traced_s


def is_matmul(op: str) -> bool:
    return op in MATMUL_OPS or "scaled_dot_product" in op   # SDPA's CPU flash kernel does its matmuls itself


# ----------------------------------------------------------------------------------------------- tables
def param_split(cfg: ModelConfig, state) -> list[tuple[str, int]]:
    """Our parameters: the [V, D] embedding, the [D, V] unembedding (untied), the rest."""
    groups = collections.Counter()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        top = str(getattr(path[0], "key", path[0]))
        groups[top if top in ("embedding", "lm_head") else "rest"] += leaf.size
    names = {"embedding": "embedding [V, D]", "lm_head": "unembedding (lm_head) [D, V]",
             "rest": "layers and norms"}
    return [(names[k], groups[k]) for k in ("embedding", "lm_head", "rest") if groups[k]]


def print_phases(s_ours: dict, s_hf: dict):
    print_header("phase", "ours s / step", "ours share", "PyTorch s / step", "PyTorch share", "PyTorch / ours")
    labels = dict(forward="forward to the loss (no backward)", forward_backward="forward + backward (no optimizer)",
                  optimizer="AdamW update alone", full="full step")
    for key, label in labels.items():
        a, p = s_ours[key], s_hf[key]
        print(f"| {label} | {a:.4f} | {a / s_ours['full']:.0%} | {p:.4f} | {p / s_hf['full']:.0%} | {p / a:.2f}x |")
    for key, label in (("backward", "backward alone (forward + backward − forward)"),
                       ("rest", "rest of the step (full − forward + backward − AdamW)")):
        a, p = derived(s_ours, key), derived(s_hf, key)
        print(f"| {label} | {a:.4f} | {a / s_ours['full']:.0%} | {p:.4f} | {p / s_hf['full']:.0%} | "
              f"{p / a if a > 0 else float('nan'):.2f}x |")


def derived(s: dict, key: str) -> float:
    if key == "backward":
        return s["forward_backward"] - s["forward"]
    return s["full"] - s["forward_backward"] - s["optimizer"]


def print_jax_profile(rows, facts, s_full: float):
    total, step = sum(r[-1] for r in rows), facts["traced_s"]
    print(f"trace: {facts['events']} thunk events of module `{facts['module']}` on "
          + ", ".join(f"{where} threads ({n})" for where, n in facts["where"].most_common())
          + f"; traced step {step:.4f} s (untraced {s_full:.4f} s); op durations sum to {total / 1e6:.1f} ms / "
          f"step, and some op is running during {facts['covered_s'] * 1e3:.1f} ms of it (a sum above that: ops "
          f"ran concurrently). Shares are of the traced step.\n")
    print_header("HLO op", "kind", "JAX op (metadata)", "output", "ms / step", "% of step")
    for op, kind, op_name, _, dims, _, ns in rows[:TOP]:
        print(f"| {op} | {kind} | {short_op_name(op_name)} | [{', '.join(map(str, dims))}] | {ns / 1e6:.2f} | "
              f"{ns / 1e9 / step:.1%} |")
    print()
    print_header("kind", "ops", "ms / step", "% of step")
    kinds = collections.defaultdict(lambda: [0, 0.0])
    for _, kind, *_, ns in rows:
        kinds[kind][0] += 1
        kinds[kind][1] += ns
    for kind, (n, ns) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
        print(f"| {kind} | {n} | {ns / 1e6:.2f} | {ns / 1e9 / step:.1%} |")
    print()
    print_header("part of the step (the op's JAX metadata)", "ms / step", "% of step")
    in_scan = sum(r[-1] for r in rows if r[3])
    for label, ns in (("inside the scan: forward + backward", in_scan),
                      ("outside it: AdamW update, gradient and parameter norms", total - in_scan)):
        print(f"| {label} | {ns / 1e6:.2f} | {ns / 1e9 / step:.1%} |")


def jax_summary(rows, cfg: ModelConfig, step_s: float) -> dict:
    """Exclusive shares of the step: matmuls; the embedding gradient (the [V, D] scatter-add and the zero fill it
    adds into); the ops outside the scan (AdamW, norms); other memory-bound ops."""
    vd = sorted((cfg.vocab_size, cfg.embed_dim))
    scatters = [r for r in rows if r[1] == "scatter/gather" and sorted(r[4]) == vd]
    embedding_grad = {r[0] for r in scatters} | {o for r in scatters for o in r[5]}
    parts = collections.Counter()
    for op, kind, _, in_scan, dims, _, ns in rows:
        if kind == "matmul (dot)":
            parts["matmuls"] += ns
        elif op in embedding_grad and sorted(dims) == vd:   # the scatter and its [V, D] zeros, not its indices
            parts["embedding gradient (zero fill + scatter-add)"] += ns
        elif not in_scan:
            parts["AdamW + norms"] += ns
        else:
            parts["other elementwise, reductions, copies"] += ns
    return {k: v / 1e9 / step_s for k, v in parts.items()}


def print_torch_profile(averages, by_phase, steps: int, traced_s: float, s_full: float):
    total = sum(e.self_cpu_time_total for e in averages) / steps
    print(f"profile: {len(averages)} distinct ops and ranges; traced step {traced_s:.4f} s (untraced "
          f"{s_full:.4f} s); self CPU times sum to {total / 1e3:.1f} ms / step. Shares are of the traced step.\n")
    print_header("op", "calls / step", "self ms / step", "% of step", "where (share of its self time)")
    for e in averages[:TOP]:
        phases = by_phase[e.key]
        where = ", ".join(f"{p} {us / sum(phases.values()):.0%}" for p, us in phases.most_common()
                          if us >= 0.1 * sum(phases.values()))
        ms = e.self_cpu_time_total / steps / 1e3
        print(f"| {e.key} | {e.count / steps:.0f} | {ms:.2f} | {ms / 1e3 / traced_s:.1%} | {where} |")


def torch_summary(by_phase, steps: int, step_s: float) -> dict:
    """Exclusive shares of the step, as `jax_summary`'s; the optimizer's ops found by their enclosing range."""
    parts = collections.Counter()
    for op, phases in by_phase.items():
        for phase, us in phases.items():
            if is_matmul(op):
                parts["matmuls"] += us
            elif phase == "embedding grad":
                parts["embedding gradient (zero fill + scatter-add)"] += us
            elif phase == "optimizer":
                parts["AdamW"] += us
            else:
                parts["other elementwise, reductions, copies, Python"] += us
    return {k: v / steps / 1e6 / step_s for k, v in parts.items()}


# ----------------------------------------------------------------------------------------------- components
def components(cfg: ModelConfig, b: int, t: int, reps: int) -> list[tuple[str, float, float, float]]:
    """The two parts of the backward the profile points at, alone, forward + backward, each in both weight
    layouts and in PyTorch: (name, ours in our layout, ours in PyTorch's layout, PyTorch) seconds.
    SwiGLU MLP: ours [D, F] gate/up and [F, D] down, PyTorch's nn.Linear [F, D] and [D, F]. Readout: the
    cross-entropy of [B, V] logits from the label positions' [B, D] hidden states against the unembedding,
    ours [D, V] (untied), PyTorch's lm_head [V, D]."""
    import torch

    d, f, v = cfg.embed_dim, cfg.mlp_dim, cfg.vocab_size
    keys = jax.random.split(jax.random.key(0), 5)
    x_BxTxD = jax.random.normal(keys[0], (b, t, d))
    w_df, w_fd = [jax.random.normal(k, (d, f)) * 0.05 for k in keys[1:3]], jax.random.normal(keys[3], (f, d)) * 0.05

    def mlp_ours(w, x):   # gate, up [D, F]; down [F, D]
        h = jax.nn.silu(jnp.einsum("BTD,DF->BTF", x, w[0])) * jnp.einsum("BTD,DF->BTF", x, w[1])
        return jnp.sum(jnp.einsum("BTF,FD->BTD", h, w[2]) ** 2)

    def mlp_torch_layout(w, x):   # gate, up [F, D]; down [D, F]
        h = jax.nn.silu(jnp.einsum("BTD,FD->BTF", x, w[0])) * jnp.einsum("BTD,FD->BTF", x, w[1])
        return jnp.sum(jnp.einsum("BTF,DF->BTD", h, w[2]) ** 2)

    ours = (w_df[0], w_df[1], w_fd)
    theirs = tuple(w.T.copy() for w in ours)
    hidden_BxD = jax.random.normal(keys[4], (b, d))
    w_dv = jax.random.normal(keys[4], (d, v)) * 0.05
    target_B = jnp.full((b,), 5)

    def readout(w, h, spec):
        logits_BxV = jnp.einsum(spec, h, w)
        return jnp.sum(jax.nn.logsumexp(logits_BxV, -1) - logits_BxV[jnp.arange(b), target_B])

    grad = jax.jit(jax.grad(lambda w, x, fn: fn(w, x), argnums=(0, 1)), static_argnums=2)
    readout_grad = jax.jit(jax.grad(readout, argnums=(0, 1)), static_argnums=2)
    rows = [("SwiGLU MLP, one layer", seconds(lambda: grad(ours, x_BxTxD, mlp_ours), reps),
             seconds(lambda: grad(theirs, x_BxTxD, mlp_torch_layout), reps)),
            ("label-position readout + CE", seconds(lambda: readout_grad(w_dv, hidden_BxD, "BD,DV->BV"), reps),
             seconds(lambda: readout_grad(w_dv.T.copy(), hidden_BxD, "BD,VD->BV"), reps))]

    x = torch.tensor(np.asarray(x_BxTxD))
    gate, up, down = (torch.nn.Linear(d, f, bias=False), torch.nn.Linear(d, f, bias=False),
                      torch.nn.Linear(f, d, bias=False))
    head, h = torch.nn.Linear(d, v, bias=False), torch.tensor(np.asarray(hidden_BxD), requires_grad=True)
    target = torch.full((b,), 5)

    def torch_mlp():
        for p in (gate.weight, up.weight, down.weight):
            p.grad = None
        (down(torch.nn.functional.silu(gate(x)) * up(x)) ** 2).sum().backward()

    def torch_readout():
        head.weight.grad = h.grad = None
        torch.nn.functional.cross_entropy(head(h), target, reduction="sum").backward()

    return [(name, a, c, seconds(fn, reps)) for (name, a, c), fn in zip(rows, (torch_mlp, torch_readout))]


def print_summary(name: str, parts: dict, matmul_s: float, step_s: float):
    matmuls = parts.get("matmuls", 0.0)
    memory = sum(v for k, v in parts.items() if k != "matmuls")
    detail = ", ".join(f"{k} {v:.0%}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if k != "matmuls")
    print(f"- {name} (traced step {step_s:.4f} s): matmuls {matmuls:.0%} ({step_s * matmuls:.4f} s; the analytic "
          f"FLOPs at the measured matmul peak: {matmul_s:.4f} s); memory-bound {memory:.0%} ({detail}); "
          f"in no op {max(0.0, 1 - memory - matmuls):.0%}")


def main():
    args = model_flags().parse_args()
    cfg = model_config(args)
    b, t = args.batch, args.length
    peak, bandwidth = matmul_peak(), stream_bandwidth()

    # Ours: the full step as train_step.py times it, then its trace, then the phases (which consume the state).
    s_ours = {}
    s_ours["full"], jitted, state, batch = time_ours(cfg, "cls", b, t, args.reps)
    split = param_split(cfg, state)
    with jax.set_mesh(one_device_mesh()):
        state, jax_rows, facts = profile_ours(jitted, state, batch, args.reps)
        s_ours.update(phases_ours(cfg, state, batch, args.reps))
    del state

    # The peer: the full step as train_step.py times it ((d)), then the phases and the profile on one model.
    s_hf = dict(full=time_hf(cfg, b, t, args.reps, last_only=True))
    model, opt, forward, step = hf_peer(cfg, b, t)
    s_hf.update(phases_hf(opt, forward, args.reps))
    averages, by_phase, hf_traced_s = profile_hf(step, args.reps)

    print(f"model: qwen3-style, vocab {cfg.vocab_size}, d {cfg.embed_dim}, {cfg.num_layers} layers, "
          f"{cfg.num_params() / 1e6:.1f}M params; batch {b} x length {t}; classification step; float32; "
          f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores; measured matmul peak {peak / 1e9:.1f} GFLOP/s, "
          f"memory bandwidth {bandwidth / 1e9:.1f} GB/s (jitted x += y, in place); {args.reps} reps a measurement\n")
    print("## 1. Phases, each timed alone\n")
    print_phases(s_ours, s_hf)
    n_params = sum(n for _, n in split)
    print(f"\nAdamW moves {ADAMW_BYTES} bytes a float32 parameter (reads param, grad, mu, nu; writes param, mu, "
          f"nu), the same in both frameworks:\n")
    print_header("parameters", "count", "share", "AdamW traffic / step", "at measured bandwidth")
    hf_total = sum(p.numel() for p in model.parameters())
    for name, n in split + [("total (ours)", n_params), ("total (PyTorch model)", hf_total)]:
        print(f"| {name} | {n / 1e6:.2f}M | {n / n_params:.0%} | {n * ADAMW_BYTES / 1e6:.0f} MB | "
              f"{n * ADAMW_BYTES / bandwidth * 1e3:.1f} ms |")

    print("\n## 2. Top ops by time, from a profile of the full step\n")
    print(f"### ours: XLA CPU thunks in a jax.profiler trace of {args.reps} steps\n")
    if jax_rows:
        print_jax_profile(jax_rows, facts, s_ours["full"])
    else:   # no per-op events: XLA's own static estimate of the compiled step instead
        cost = facts["cost"]
        print(f"the trace held no per-op events (planes: {', '.join(facts['planes'])}); "
              f"XLA cost analysis of the compiled step: {cost.get('flops', 0) / 1e9:.1f} GFLOP, "
              f"{cost.get('bytes accessed', 0) / 1e9:.2f} GB accessed "
              f"({cost.get('bytes accessed', 0) / bandwidth:.3f} s at the measured bandwidth)")
    print(f"\n### transformers + PyTorch: torch.profiler key_averages() of {args.reps} steps, by self CPU time\n")
    print_torch_profile(averages, by_phase, args.reps, hf_traced_s, s_hf["full"])

    print("\n## 3. Matmuls vs memory-bound work (shares of the traced step, from the profiles above)\n")
    flops = step_flops(cfg, b, t, b)
    if jax_rows:
        print_summary("ours", jax_summary(jax_rows, cfg, facts["traced_s"]), flops / peak, facts["traced_s"])
    print_summary("PyTorch", torch_summary(by_phase, args.reps, hf_traced_s), flops / peak, hf_traced_s)

    print("\n## 4. The backward's hot spots alone: forward + backward, each weight layout\n")
    print_header("part", "ours, our layout (ms)", "ours, PyTorch's layout (ms)", "PyTorch (ms)")
    for name, ours_s, ours_torch_layout_s, torch_s in components(cfg, b, t, args.reps):
        print(f"| {name} | {ours_s * 1e3:.1f} | {ours_torch_layout_s * 1e3:.1f} | {torch_s * 1e3:.1f} |")


if __name__ == "__main__":
    main()
