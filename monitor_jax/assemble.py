"""Config -> the pieces every command uses. The one place that reads the config and builds things.

Commands (monitor_jax/commands/) call these and hand typed pieces to the
library: the trainer loop, the evaluator, the scorer, the sampler never see the
config. Nothing else builds a mesh, a tokenizer, a model, a train state, a
checkpoint manager, or restores parameters.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Sequence

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
from monitor_jax.data.pipeline import train_batches
from monitor_jax.data.sources import open_source
from monitor_jax.config import eval_names, inline_tasks, model_config, section
from monitor_jax.errors import CheckpointError, ConfigError
from monitor_jax.eval import modes
from monitor_jax.eval.evaluator import Evaluator, make_eval_set, unique_names
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.summarize import Judge
from monitor_jax.generate import Sampler
from monitor_jax.model import ModelConfig, Transformer, create_model, load_hf, lora, save_hf
from monitor_jax.model.gguf import resolve_model_path
from monitor_jax.model.tokenizer import Tokenizer, load_tokenizer
from monitor_jax.parallel import make_mesh
from monitor_jax.parallel.multihost import sync
from monitor_jax.train.optimizer import adamw
from monitor_jax.train.step import TrainState, frozen_params, init_state, make_train_step
from monitor_jax.train.trainer import LoopConfig

Config = ml_collections.ConfigDict
# The task registry's extension point: modules that register tasks when imported. Configs name tasks from
# these (and from any module their config file imports).
TASK_LIBRARIES = ("monitor_jax.data.research", "monitor_jax.data.demo")


def register_tasks() -> None:
    for module in TASK_LIBRARIES:
        importlib.import_module(module)


class Tasks:
    """The run's task table, built once: the config's own tasks (`tasks`) over the registered ones."""

    def __init__(self, c: Config):
        register_tasks()
        self.inline = inline_tasks(c)
        clash = sorted(set(self.inline) & set(task_registry.registered()))
        if clash:
            raise ConfigError(f"tasks: {clash} are registered tasks already (monitor_jax.assemble.TASK_LIBRARIES); "
                              f"give the config's own tasks other names")

    def __call__(self, name: str):
        """A task by name: the config's own, else a registered one (an unknown name is a TaskError)."""
        return self.inline[name] if name in self.inline else task_registry.get(name)


def task(c: Config, name: str):
    """One task by name, for callers that need no more (a command's --task); runs build `Tasks` once."""
    return Tasks(c)(name)


def check_inline_labels(c: Config, tok: Tokenizer) -> None:
    """Each label of the config's classification tasks must be one token after its prompt (after the answer
    marker, for a task that has one), checked when the tokenizer is known; the error names the key."""
    for i, t in enumerate(inline_tasks(c).values()):
        if isinstance(t, task_registry.ClassificationTask):
            try:
                task_registry.resolve_label_ids(t, tok, after_marker=bool(t.answer_marker))
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
    m, cfg = load_hf(path, mesh=device_mesh, **section(c, "model").overrides())
    check_vocab(cfg.vocab_size, tok, str(path))
    return m


def model(c: Config, device_mesh: Mesh, tok: Tokenizer) -> Transformer:
    """`model.hf_path` imported onto the mesh, else a random init (`model.config`, the tokenizer's vocabulary)."""
    if c.model.hf_path:
        return _import_hf(hf_path(c), c, device_mesh, tok)
    return create_model(model_config(c, tok.vocab_size), mesh=device_mesh, seed=c.seed)


def adapters(c: Config, m: Transformer, device_mesh: Mesh) -> lora.Adapters | None:
    """LoRA adapters on `m`: a PEFT directory's (`model.adapter`), or new ones (`lora.rank` > 0, over the
    `lora.targets` rules; each rule's matches are printed). None: full fine-tuning, nothing added."""
    lc = section(c, "lora")
    if c.model.adapter:
        peft = lora.read_peft(c.model.adapter, m.cfg)
        if lc.rank and lc.rank != peft.rank:
            raise ConfigError(f"lora.rank={lc.rank} but model.adapter={c.model.adapter!r} has rank r={peft.rank}; "
                              f"set lora.rank=0 (the adapter's) or {peft.rank}")
        info = lora.load_peft(m, peft, device_mesh)
        lines = [f"lora: loaded {len(info.modules)} adapted module(s) of rank {info.rank} (alpha {info.alpha:g}) "
                 f"from PEFT directory {c.model.adapter}"]
        if peft.dropout:
            lines.append(f"lora: {c.model.adapter} sets lora_dropout={peft.dropout:g}; monitor_jax applies no "
                         f"adapter dropout (evaluation is unaffected; further training runs without it)")
    elif lc.rank:
        modules, matches = lora.select(m, lc.targets.split())
        info = lora.add_adapters(m, modules, lc.rank, lc.alpha, lc.rslora, seed=lc.seed, mesh=device_mesh)
        lines = lora.summary(matches, m)
    else:
        return None
    if jax.process_index() == 0:
        for line in lines:
            print(line, flush=True)
    return info


def base_record(c: Config, m: Transformer) -> dict:
    """What a LoRA checkpoint records of the base its adapters belong to: the checkpoint's path and a cheap
    fingerprint of its files (model/lora.py: fingerprint), or, for a random init, its config and seed."""
    if c.model.hf_path:
        path = hf_path(c)
        return dict(path=str(Path(path).resolve()), fingerprint=lora.fingerprint(path))
    described = json.dumps(dict(config=dict(c.model.config), seed=c.seed, vocab=m.cfg.vocab_size), sort_keys=True)
    return dict(path="random init (model.config)",
                fingerprint=hashlib.sha256(described.encode()).hexdigest()[:32])


def check_base(recorded: dict, current: dict, where: str) -> None:
    if recorded.get("fingerprint") != current["fingerprint"]:
        raise CheckpointError(f"{where} holds LoRA adapters trained on the base {recorded.get('path')} (fingerprint "
                              f"{recorded.get('fingerprint')}), but this run's base is {current['path']} (fingerprint "
                              f"{current['fingerprint']}): set model.hf_path to the base the adapters were trained on")


# ------------------------------------------------------------------ training pieces
def optimizer(c: Config) -> optax.GradientTransformation:
    return adamw(section(c, "optim"), c.train.steps)


def train_state(rt: "Runtime", opt: optax.GradientTransformation) -> TrainState:
    """The train state over the runtime's trained parameters (all, or a LoRA run's adapters), which move into it
    (the step donates them); a LoRA run's base weights become `rt.frozen`."""
    m = nnx.merge(rt.graphdef, rt.params)
    state = init_state(m, opt, rt.mesh, rt.trainable)
    rt.frozen = frozen_params(m, rt.trainable) if rt.lora else None
    rt.params = None
    return state


def train_step(rt: "Runtime", opt: optax.GradientTransformation):
    """The (unjitted) step function: losses, mixing weights and optimiser from the config."""
    c = rt.config
    loss_cfg = section(c, "loss", instruction=bool(c.data.instruction), num_tasks=len(c.data.classification))
    return make_train_step(rt.graphdef, opt, loss_cfg, optax_schedule(**loss_cfg.cls_weight),
                           optax_schedule(**loss_cfg.sft_weight))


def loop_config(c: Config) -> LoopConfig:
    """The loop's settings: the `train` section, `eval.every` and `eval.before`."""
    return section(c, "train", eval_every=c.eval.every, eval_before=c.eval.before)


def task_names(c: Config) -> list[str]:
    """The training sources' names, indexed by the batches' `task_id`: each classification source's task
    (`#2`, `#3`... when a task trains on several sources), then the instruction task."""
    return unique_names([item["task"] for item in c.data.classification], [None] * len(c.data.classification)) + (
        [dict(c.data.instruction)["task"]] if c.data.instruction else [])


def train_data(c: Config, tok: Tokenizer, task: Tasks | None = None) -> grain.MapDataset:
    """Batch s is this process's slice of global step s (exact scheduled mixture, grain); `task` is the run's
    task table (built here when not given)."""
    task = task or Tasks(c)
    length = c.data.max_length
    cls = []
    for k, item in enumerate(c.data.classification):
        enc = ClassificationEncoder(task(item["task"]), tok, length, task_id=k)
        cls.append((open_source(item["source"], c.data_root), enc, float(item.get("weight", 1.0))))
    instr = None
    if c.data.instruction:
        item = dict(c.data.instruction)
        enc = InstructionEncoder(task(item["task"]), tok, length, task_id=len(cls))
        instr = (open_source(item["source"], c.data_root), enc, bool(item.get("pack", False)))
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


def resume(rt: "Runtime", mngr: ocp.CheckpointManager, state: TrainState, data_iter) -> tuple[int, TrainState]:
    """The full train state and the data iterator's position from the newest intact checkpoint, if any (a LoRA
    run's: its adapters, after checking the base they were trained on)."""
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)

    def args():
        items = dict(state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data_iter))
        return ocp.args.Composite(**items, **({"base": ocp.args.JsonRestore()} if rt.lora else {}))

    start, restored = checkpoints.restore_newest_intact(mngr, args, rt.config.workdir)
    if restored is None:
        return 0, state
    if rt.lora:
        check_base(restored["base"], rt.base, f"checkpoint {mngr.directory}/{start}")
    return start, restored["state"]


def save_args(rt: "Runtime", state: TrainState, data_iter) -> ocp.args.Composite:
    """What a checkpoint holds: the train state, the data iterator's position, the config; a LoRA run's also
    the base model's path and fingerprint (its state holds the adapters only)."""
    base = {"base": ocp.args.JsonSave(rt.base)} if rt.lora else {}
    return ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
                              config=ocp.args.JsonSave(json.loads(rt.config.to_json_best_effort())), **base)


# ------------------------------------------------------------------ the runtime
@dataclasses.dataclass
class Runtime:
    """What a run builds once and hands to every builder: the mesh, the tokenizer, the task table, the model's
    graph and config, and its parameters (with where they came from)."""
    config: Config
    mesh: Mesh
    tokenizer: Tokenizer
    tokenizer_dir: str
    task: Tasks                 # task(name) -> Task
    graphdef: nnx.GraphDef
    model_cfg: ModelConfig
    params: Any                 # None once moved into a train state
    description: str            # where the parameters came from
    step: int | None = None     # the orbax step; None for a Hugging Face directory or the base model
    pretrained: bool = False    # from a Hugging Face checkpoint (model.hf_path or --checkpoint=HF_DIR)
    lora: lora.Adapters | None = None   # the LoRA adapters the model carries (None: full fine-tuning)
    base: dict | None = None    # LoRA: the base model's path and fingerprint (base_record)
    frozen: Any = None          # LoRA, once the train state is built: the base weights the step reads

    @property
    def rules(self):
        """The model's logical-axis sharding rules."""
        return self.model_cfg.sharding_rules

    @property
    def trainable(self):
        """What training updates: the adapters in a LoRA run, else every parameter."""
        return lora.TRAINABLE if self.lora else nnx.Param


def runtime(c: Config, checkpoint: str | None = None) -> Runtime:
    """The run's runtime. `checkpoint=None`: the model the run starts from (training); otherwise parameters only
    from `--checkpoint` (monitor_jax.checkpoints.resolve; "" = the work directory's latest, else the base
    model): the optimiser state is never read."""
    device_mesh = mesh(c)
    tok, tok_dir = tokenizer(c)
    tasks = Tasks(c)
    base = (f"base model {c.model.hf_path}" if c.model.hf_path else "base model (untrained)")
    ref = checkpoints.resolve(checkpoint, c.workdir, c.train.best_metric, c.train.best_mode) if (
        checkpoint is not None) else None
    if ref is not None and ref.kind == "hf":   # a whole model (an export of a LoRA run is merged): no adapters
        m = _import_hf(ref.path, c, device_mesh, tok)
        return Runtime(c, device_mesh, tok, tok_dir, tasks, nnx.graphdef(m), m.cfg, nnx.state(m, nnx.Param),
                       ref.describe(), None, pretrained=True)
    m = model(c, device_mesh, tok)
    info = adapters(c, m, device_mesh)
    record = base_record(c, m) if info else None
    graphdef = nnx.graphdef(m)
    if ref is not None and ref.kind == "orbax":
        _restore_trained(m, ref, record)
    description = ref.describe() if ref is not None and ref.kind == "orbax" else base
    return Runtime(c, device_mesh, tok, tok_dir, tasks, graphdef, m.cfg, nnx.state(m, nnx.Param), description,
                   ref.step if ref is not None else None, pretrained=bool(c.model.hf_path), lora=info, base=record)


def _restore_trained(m: Transformer, ref: checkpoints.Reference, base: dict | None) -> None:
    """Set `m`'s trained parameters from an orbax step: all of them, or (`base` given: a LoRA model) its adapters,
    after checking the checkpoint's base record against `base`."""
    saved = "LoRA adapters only" if checkpoints.has_item(ref, "base") else "a full model"
    if (saved == "LoRA adapters only") != (base is not None):
        now = "has LoRA (lora.rank or model.adapter)" if base is not None else "trains a full model (lora.rank=0)"
        raise CheckpointError(f"--checkpoint {ref.describe()} holds {saved} but this config {now}: use the config "
                              f"the run was trained with")
    trained = nnx.state(m, lora.TRAINABLE if base is not None else nnx.Param)
    restored = checkpoints.restore_params(ref, jax.tree.map(ocp.utils.to_shape_dtype_struct, trained))
    if base is not None:
        check_base(checkpoints.restore_item(ref, "base"), base, f"checkpoint {ref.describe()}")
    nnx.update(m, restored)


def export(rt: Runtime, params: Any, output: str) -> list[str]:
    """Write `params` as a Hugging Face directory at `output` (a LoRA model merged into ordinary weights), and
    a LoRA model's adapters in the PEFT layout at `output/adapter`; returns what was written."""
    m = nnx.merge(rt.graphdef, params)
    written = [str(save_hf(lora.merged(m) if rt.lora else m, output, tokenizer=rt.tokenizer_dir))]
    if rt.lora:
        base = rt.base["path"] if rt.config.model.hf_path else ""
        written.append(str(lora.save_peft(m, Path(output) / "adapter", base_model=base)))
    return written


# ------------------------------------------------------------------ evaluation and generation
def scorer(rt: Runtime) -> Scorer:
    """Length-bucketed scorer, sharded by the model's own rules (as in training)."""
    e = rt.config.eval
    return Scorer(rt.graphdef, rt.mesh, e.batch_size, tuple(e.buckets), rt.tokenizer.pad_id, rules=rt.rules,
                  pack_max=e.pack_max)


def sampler(rt: Runtime, writers: Sequence = ()) -> Sampler:
    """The sampler over the runtime's graph (parameters come with each call). Sized by `generate.*`, or, for
    the eval modes in which the monitor writes first (`writers`: their encoders), by their prompt and
    generation budgets, batched like the scorer (eval.batch_size, eval.buckets)."""
    if writers:
        size, buckets = rt.config.eval.batch_size, tuple(rt.config.eval.buckets)
        prompt, new = max(w.prompt_budget for w in writers), max(w.max_new_tokens for w in writers)
    else:
        g = rt.config.generate
        size, buckets, prompt, new = g.batch_size, tuple(g.buckets), g.max_prompt_length, g.max_new_tokens
    return Sampler(rt.graphdef, rt.model_cfg, rt.tokenizer, rt.mesh, batch_size=size, max_prompt_length=prompt,
                   max_new_tokens=new, buckets=buckets)


def judge(rt: Runtime, spec: str) -> Judge:
    """The summary judge: "base" (the model the run started from: model.hf_path, or model.config's random
    init with the run's seed) or a Hugging Face directory (with its own tokenizer)."""
    c = rt.config
    if spec == "base":
        m, judge_tok, what = model(c, rt.mesh, rt.tokenizer), rt.tokenizer, \
            f"base model {c.model.hf_path or '(random init)'}"
    else:
        ref = checkpoints.resolve(spec, c.workdir)
        if ref.kind != "hf":
            raise CheckpointError(f"judge={spec!r}: a judge is 'base' or a Hugging Face directory; export a run's "
                                  f"checkpoint with the export command to judge with it")
        judge_tok = load_tokenizer(ref.path)
        m = _import_hf(ref.path, c, rt.mesh, judge_tok)
        what = f"Hugging Face directory {ref.path}"
    judge_rt = dataclasses.replace(rt, tokenizer=judge_tok, graphdef=nnx.graphdef(m), model_cfg=m.cfg,
                                   params=nnx.state(m, nnx.Param), description=what)
    return Judge(judge_rt.params, scorer(judge_rt), judge_tok, what)


def evaluator(rt: Runtime, check_label_mass: bool | None = None) -> Evaluator:
    """Every `eval.tasks` item encoded once by its mode (eval/modes/; held-out domains and prompt variants
    alike); the items whose mode writes first get their prompts here and write at each evaluation, through one
    sampler (eval.* sizes its batches). `check_label_mass` (default: a pretrained model) warns when the labels
    get little probability."""
    c = rt.config
    sc = scorer(rt)
    needs = modes.Needs(task=rt.task, judge=functools.cache(lambda spec: judge(rt, spec)))   # one judge a spec
    sets = []
    for name, item in zip(eval_names(c), c.eval.tasks):
        t, mode = rt.task(item["task"]), modes.of(item)
        enc = mode.encoder(t, rt.tokenizer, sc.max_length, item, needs)
        calibration = open_source(item["calibration"], c.data_root) if item.get("calibration") else None
        rows = open_source(item["source"], c.data_root)
        sets.append(make_eval_set(name, t, bool(item.get("heldout", False)), rows, enc, c.eval.max_rows, calibration,
                                  mode))
    writers = [s.writer for s in sets if s.writer]
    gen = sampler(rt, writers) if writers else None
    return Evaluator(sets, sc, bootstrap=c.eval.bootstrap,
                     check_label_mass=rt.pretrained if check_label_mass is None else check_label_mass, sampler=gen)
