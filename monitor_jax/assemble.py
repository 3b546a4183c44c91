"""Config -> the pieces every command uses. The one place that reads the config and builds things.

Commands (monitor_jax/commands/) call these and hand typed pieces to the
library: the trainer loop, the evaluator, the scorer, the sampler never see the
config. Nothing else builds a mesh, a tokenizer, a model, a train state, a
checkpoint manager, or restores parameters.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from monitor_jax import checkpoints
from monitor_jax.data import tasks as task_registry
from monitor_jax.data.encode import ClassificationEncoder, InstructionEncoder
from monitor_jax.data.mixing import make_schedule, optax_schedule
from monitor_jax.data.pipeline import open_rows, train_batches
from monitor_jax.config import eval_names, inline_tasks, model_config, model_overrides
from monitor_jax.errors import CheckpointError, ConfigError
from monitor_jax.eval.evaluator import Evaluator, make_eval_set, unique_names
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.summarize import Judge, SummaryEncoder
from monitor_jax.eval.thinking import ThinkingEncoder
from monitor_jax.generate import Sampler
from monitor_jax.model import ModelConfig, Transformer, create_model, load_hf
from monitor_jax.model.gguf import resolve_model_path
from monitor_jax.model.tokenizer import Tokenizer, load_tokenizer
from monitor_jax.parallel import make_mesh
from monitor_jax.parallel.multihost import sync
from monitor_jax.train.optimizer import OptimConfig, adamw
from monitor_jax.train.step import LossConfig, TrainState, init_state, make_train_step

Config = ml_collections.ConfigDict
# The task registry's extension point: modules that register tasks when imported. Configs name tasks from
# these (and from any module their config file imports).
TASK_LIBRARIES = ("monitor_jax.data.research", "monitor_jax.data.demo")


def register_tasks() -> None:
    for module in TASK_LIBRARIES:
        importlib.import_module(module)


def task(c: Config, name: str):
    """A task by name: the config's own (`tasks`), else a registered one."""
    register_tasks()
    inline = inline_tasks(c)
    clash = sorted(set(inline) & set(task_registry.registered()))
    if clash:
        raise ConfigError(f"tasks: {clash} are registered tasks already (monitor_jax.assemble.TASK_LIBRARIES); "
                          f"give the config's own tasks other names")
    return inline[name] if name in inline else task_registry.get(name)


def check_inline_labels(c: Config, tok: Tokenizer) -> None:
    """Each label of the config's classification tasks must be one token after its prompt (after the answer
    marker, for a task that has one), checked when the tokenizer is known; the error names the key."""
    for i, t in enumerate(inline_tasks(c).values()):
        if isinstance(t, task_registry.ClassificationTask):
            scored = dataclasses.replace(t, answer_prefix=t.answer_marker) if t.answer_marker else t
            try:
                scored.label_ids(tok, {f: "x" for f in t.fields})
            except task_registry.TaskError as e:
                raise ConfigError(f"tasks[{i}].positive/negative: {e}") from None


# ------------------------------------------------------------------ mesh, tokenizer, model
def mesh(c: Config) -> Mesh:
    return make_mesh(**dict(c.mesh))


def tokenizer(c: Config) -> tuple[Tokenizer, str]:
    """(tokenizer, its directory): `model.tokenizer`, else the checkpoint's; "demo" builds the demo's."""
    if c.model.tokenizer == "demo":
        from monitor_jax.data import demo

        path = Path(c.workdir) / "tokenizer"
        if not (path / "tokenizer.json").exists():
            if jax.process_index() == 0:
                demo.build_demo_tokenizer(path)
            sync("demo tokenizer")
        tok = load_tokenizer(path)
    else:
        path = c.model.tokenizer or hf_path(c)
        tok = load_tokenizer(path)
    check_inline_labels(c, tok)
    return tok, str(path)


def hf_path(c: Config) -> str:
    """`model.hf_path`; a `.gguf` file or `package:NAME` is converted once into the cache (model/gguf.py)."""
    return resolve_model_path(c.model.hf_path) if c.model.hf_path else ""


def check_vocab(model_vocab: int, tok: Tokenizer, model_path: str) -> None:
    """Every token id must index the embedding: an id past it reads NaN (jnp.take's fill), silently."""
    if model_vocab < tok.vocab_size:
        raise CheckpointError(f"model {model_path} has a vocabulary of {model_vocab} but the tokenizer "
                              f"{tok.hf.name_or_path} has {tok.vocab_size} tokens: ids {model_vocab}.."
                              f"{tok.vocab_size - 1} fall outside the embedding; use the checkpoint's own "
                              f"tokenizer (model.tokenizer)")


def _import_hf(path: str | Path, c: Config, device_mesh: Mesh, tok: Tokenizer) -> Transformer:
    m, cfg = load_hf(path, mesh=device_mesh, **model_overrides(c))
    check_vocab(cfg.vocab_size, tok, str(path))
    return m


def model(c: Config, device_mesh: Mesh, tok: Tokenizer) -> Transformer:
    """`model.hf_path` imported onto the mesh, else a random init (`model.config`, the tokenizer's vocabulary)."""
    if c.model.hf_path:
        return _import_hf(hf_path(c), c, device_mesh, tok)
    return create_model(model_config(c, tok.vocab_size), mesh=device_mesh, seed=c.seed)


# ------------------------------------------------------------------ training pieces
def optimizer(c: Config) -> optax.GradientTransformation:
    return adamw(OptimConfig(**dict(c.optim)), c.train.steps)


def train_state(m: Transformer, opt: optax.GradientTransformation, device_mesh: Mesh) -> TrainState:
    return init_state(m, opt, device_mesh)


def train_step(c: Config, graphdef: nnx.GraphDef, opt: optax.GradientTransformation):
    """The (unjitted) step function: losses, mixing weights and optimiser from the config."""
    loss_cfg = LossConfig(normalization=c.loss.normalization, two_token=c.loss.two_token,
                          chunk_size=min(c.loss.chunk_size, c.data.max_length), grad_accum=c.loss.grad_accum,
                          instruction=bool(c.data.instruction), num_tasks=len(c.data.classification))
    return make_train_step(graphdef, opt, loss_cfg, optax_schedule(**dict(c.loss.cls_weight)),
                           optax_schedule(**dict(c.loss.sft_weight)))


def task_names(c: Config) -> list[str]:
    """The training sources' names, indexed by the batches' `task_id`: each classification source's task
    (`#2`, `#3`... when a task trains on several sources), then the instruction task."""
    return unique_names([item["task"] for item in c.data.classification], [None] * len(c.data.classification)) + (
        [dict(c.data.instruction)["task"]] if c.data.instruction else [])


def train_data(c: Config, tok: Tokenizer) -> grain.MapDataset:
    """Batch s is this process's slice of global step s (exact scheduled mixture, grain)."""
    length = c.data.max_length
    cls = []
    for k, item in enumerate(c.data.classification):
        enc = ClassificationEncoder(task(c, item["task"]), tok, length, task_id=k)
        cls.append((open_rows(item["source"], c.data_root), enc, float(item.get("weight", 1.0))))
    instr = None
    if c.data.instruction:
        item = dict(c.data.instruction)
        enc = InstructionEncoder(task(c, item["task"]), tok, length, task_id=len(cls))
        instr = (open_rows(item["source"], c.data_root), enc, bool(item.get("pack", False)))
    return train_batches(cls, instr, make_schedule(**dict(c.data.mixing)), batch_size=c.train.batch_size,
                         num_steps=c.train.steps, length=length, pad_id=tok.pad_id, seed=c.data.seed,
                         process_index=jax.process_index(), process_count=jax.process_count(),
                         pack_classification=c.data.pack_classification)


def data_iterator(data: grain.MapDataset):
    return data.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)).__iter__()


# ------------------------------------------------------------------ checkpoints
def checkpoint_manager(c: Config) -> ocp.CheckpointManager:
    return checkpoints.manager(Path(c.workdir).resolve() / "checkpoints", keep=c.train.keep,
                               best_metric=c.train.best_metric, best_mode=c.train.best_mode)


def resume(c: Config, mngr: ocp.CheckpointManager, state: TrainState, data_iter) -> tuple[int, TrainState]:
    """The full train state and the data iterator's position from the newest intact checkpoint, if any."""
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    start, restored = checkpoints.restore_newest_intact(
        mngr, lambda: ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                         data=grain.checkpoint.CheckpointRestore(data_iter)), c.workdir)
    if restored is None:
        return 0, state
    return start, restored["state"]


def save_args(c: Config, state: TrainState, data_iter) -> ocp.args.Composite:
    """What a checkpoint holds: the train state, the data iterator's position, the config."""
    return ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
                              config=ocp.args.JsonSave(json.loads(c.to_json_best_effort())))


@dataclasses.dataclass
class Loaded:
    """Parameters to evaluate, score or export, and where they came from."""
    graphdef: Any
    params: Any
    mesh: Any
    tokenizer: Any
    tokenizer_dir: str
    description: str            # where the parameters came from
    step: int | None            # the orbax step; None for a Hugging Face directory or the base model
    cfg: Any = None             # the model's ModelConfig
    pretrained: bool = False    # from a Hugging Face checkpoint (model.hf_path or --checkpoint=HF_DIR)

    @property
    def rules(self):
        """The model's logical-axis sharding rules."""
        return self.cfg.sharding_rules


def params(c: Config, checkpoint: str = "") -> Loaded:
    """Parameters only, from `--checkpoint` (monitor_jax.checkpoints.resolve): the optimiser state is never read."""
    ref = checkpoints.resolve(checkpoint, c.workdir, c.train.best_metric, c.train.best_mode)
    device_mesh = mesh(c)
    tok, tok_dir = tokenizer(c)
    if ref.kind == "hf":
        m = _import_hf(ref.path, c, device_mesh, tok)
        return Loaded(nnx.graphdef(m), nnx.state(m, nnx.Param), device_mesh, tok, tok_dir, ref.describe(), None,
                      cfg=m.cfg, pretrained=True)
    m = model(c, device_mesh, tok)
    graphdef, p = nnx.graphdef(m), nnx.state(m, nnx.Param)
    if ref.kind == "orbax":
        p = checkpoints.restore_params(ref, jax.tree.map(ocp.utils.to_shape_dtype_struct, p))
    description = ref.describe() if ref.kind == "orbax" else (
        f"base model {c.model.hf_path}" if c.model.hf_path else "base model (untrained)")
    return Loaded(graphdef, p, device_mesh, tok, tok_dir, description, ref.step, cfg=m.cfg,
                  pretrained=bool(c.model.hf_path))


# ------------------------------------------------------------------ evaluation
def scorer(c: Config, graphdef: nnx.GraphDef, device_mesh: Mesh, rules, pad_id: int) -> Scorer:
    """Length-bucketed scorer, sharded by the model's own rules (as in training)."""
    return Scorer(graphdef, device_mesh, c.eval.batch_size, tuple(c.eval.buckets), pad_id, rules=rules,
                  pack_max=c.eval.pack_max)


def sampler(c: Config, loaded: "Loaded") -> Sampler:
    """The sampler over the loaded parameters, sized by `generate.*` (stop ids from the tokenizer and checkpoint)."""
    g = c.generate
    m = nnx.merge(loaded.graphdef, loaded.params)
    return Sampler(m, loaded.tokenizer, loaded.mesh, max_prompt_length=g.max_prompt_length,
                   max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, buckets=tuple(g.buckets))


def judge(c: Config, spec: str, device_mesh: Mesh, tok: Tokenizer) -> Judge:
    """The summary judge: "base" (the model the run started from: model.hf_path, or model.config's random
    init with the run's seed) or a Hugging Face directory (with its own tokenizer)."""
    if spec == "base":
        m, judge_tok, what = model(c, device_mesh, tok), tok, f"base model {c.model.hf_path or '(random init)'}"
    else:
        ref = checkpoints.resolve(spec, c.workdir)
        if ref.kind != "hf":
            raise CheckpointError(f"judge={spec!r}: a judge is 'base' or a Hugging Face directory; export a run's "
                                  f"checkpoint with the export command to judge with it")
        judge_tok = load_tokenizer(ref.path)
        m = _import_hf(ref.path, c, device_mesh, judge_tok)
        what = f"Hugging Face directory {ref.path}"
    graphdef = nnx.graphdef(m)
    return Judge(nnx.state(m, nnx.Param), scorer(c, graphdef, device_mesh, m.cfg.sharding_rules, judge_tok.pad_id),
                 judge_tok, what)


def evaluator(c: Config, tok: Tokenizer, graphdef: nnx.GraphDef, device_mesh: Mesh, model_cfg: ModelConfig,
              check_label_mass: bool) -> Evaluator:
    """Every `eval.tasks` item encoded once (held-out domains and prompt variants alike); thinking-mode items
    get their prompts here and reason at each evaluation, through one sampler (generate.* sizes its batches)."""
    sc = scorer(c, graphdef, device_mesh, model_cfg.sharding_rules, tok.pad_id)
    sets, judges = [], {}
    for name, item in zip(eval_names(c), c.eval.tasks):
        t = task(c, item["task"])
        mode = item.get("mode", "single_token")
        if mode == "thinking":
            enc = ThinkingEncoder(t, tok, sc.max_length, item["max_thinking_tokens"])
        elif mode == "summarize":
            spec = item.get("judge", "base") or "base"
            if spec not in judges:
                judges[spec] = judge(c, spec, device_mesh, tok)
            enc = SummaryEncoder(t, tok, sc.max_length, task(c, item["judge_task"]), judges[spec],
                                 item["max_summary_tokens"])
        else:
            enc = ClassificationEncoder(t, tok, sc.max_length)
        calibration = open_rows(item["calibration"], c.data_root) if item.get("calibration") else None
        rows = open_rows(item["source"], c.data_root)
        sets.append(make_eval_set(name, t, bool(item.get("heldout", False)), rows, enc, c.eval.max_rows, calibration))
    writers = [s.writer for s in sets if s.writer]
    gen = _writing_sampler(c, graphdef, tok, device_mesh, model_cfg, writers) if writers else None
    return Evaluator(sets, sc, bootstrap=c.eval.bootstrap, check_label_mass=check_label_mass, sampler=gen)


def _writing_sampler(c: Config, graphdef: nnx.GraphDef, tok: Tokenizer, device_mesh: Mesh, model_cfg: ModelConfig,
                     writers: list) -> Sampler:
    """One sampler for the eval modes in which the monitor writes first, sized by their prompt and generation
    budgets, batched like the scorer (eval.batch_size, eval.buckets)."""
    return Sampler(graphdef, tok, device_mesh, cfg=model_cfg, batch_size=c.eval.batch_size,
                   max_prompt_length=max(w.prompt_budget for w in writers),
                   max_new_tokens=max(w.max_new_tokens for w in writers), buckets=tuple(c.eval.buckets))


def writing_sampler(c: Config, loaded: Loaded, writers: list) -> Sampler:
    """`_writing_sampler` over loaded parameters (elicitation's thinking predictions)."""
    return _writing_sampler(c, loaded.graphdef, loaded.tokenizer, loaded.mesh, loaded.cfg, writers)
