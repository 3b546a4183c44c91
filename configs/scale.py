"""A monitor run at the size monitors are trained, for `plan` (docs/scaling.md): batch 64 x length 2048 on a
Hugging Face model directory (only its config.json is read by plan), over an FSDP mesh of every device.

    python -m monitor_jax.main plan --config=configs/scale.py --config.model.hf_path=configs/models/qwen3-8b \
        --topology=v5e-64 [--config.lora.rank=16]

Full fine-tuning keeps float32 parameters and computes in bfloat16 (docs/precision.md); a LoRA run stores its
frozen base in bfloat16 (--config.model.param_dtype=bfloat16). Training data are the synthetic suite's (plan
reads no rows; a real run sets data.classification to its own sources).
"""
from monitor_jax.config import base_config


def research(domain, split, n=None):
    return {"kind": "research", "domain": domain, "split": split, "n": n}


def get_config():
    c = base_config()
    c.workdir = "runs/scale"
    c.model.hf_path = "configs/models/qwen3-8b"
    c.model.param_dtype = "float32"
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.data.max_length = 2048
    c.data.classification = [{"task": "chem_harm", "source": research("chem_harm", "train"), "weight": 1.0},
                             {"task": "cyber_harm", "source": research("cyber_harm", "train"), "weight": 1.0}]
    c.data.instruction = {"task": "instruct", "source": research("instruct", "train"), "pack": True}
    c.data.mixing = {"kind": "constant", "value": 0.75}
    c.eval.tasks = [{"task": "chem_harm", "source": research("chem_harm", "test", 300), "heldout": False}]
    c.eval.buckets = (2048,)
    c.eval.batch_size = 64
    c.loss.chunk_size = 256
    c.train.batch_size = 64
    c.train.steps = 1000
    return c
