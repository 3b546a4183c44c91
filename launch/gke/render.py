"""Render the JobSet templates beside this file (tpu.yaml, gpu.yaml) from a few values; print YAML for kubectl.

    python launch/gke/render.py tpu --name=my-run --image=IMAGE --accelerator=tpu-v5-lite-podslice \
        --topology=4x4 [--chips=4] [--slices=1] [--claim=PVC --mount=/shared] [--env=KEY=VALUE ...] \
        -- python -m monitor_jax.main train --config=... | kubectl apply -f -
    python launch/gke/render.py gpu --name=my-run --image=IMAGE --nodes=2 [--gpus=8] [...] -- COMMAND ...

A template is plain YAML whose `${KEY}` strings are filled in: a string that is only `${KEY}` becomes the
value itself (a number, the command's list), any other `${KEY}` is replaced inside the text. It is also
`monitor_jax.launch.gke.render` (the sweep renders its Kubernetes Job through `gpu_jobset`).
"""
from __future__ import annotations

import argparse
import copy
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")
NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def fill(node: Any, values: Mapping[str, Any]) -> Any:
    """`node` with every `${KEY}` replaced by values[KEY]."""
    if isinstance(node, dict):
        return {fill(k, values): fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [fill(v, values) for v in node]
    if not isinstance(node, str):
        return node
    for key in PLACEHOLDER.findall(node):
        if key not in values:
            raise KeyError(f"the template needs a value for ${{{key}}} (given: {', '.join(sorted(values))})")
    whole = PLACEHOLDER.fullmatch(node)
    if whole:
        return copy.deepcopy(values[whole.group(1)])
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)


def template(name: str) -> dict:
    """A template of this folder, parsed (e.g. "tpu.yaml")."""
    return yaml.safe_load((HERE / name).read_text())


def pod_spec(jobset: Mapping[str, Any]) -> dict:
    """The pod template's spec of a rendered JobSet's (first) replicated Job."""
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def _check(name: str, command: Sequence[str], hostname: str) -> None:
    if not NAME.fullmatch(name):
        raise ValueError(f"--name={name!r}: use lower-case letters, digits and '-', starting with a letter")
    if len(hostname) > 63:
        raise ValueError(f"--name={name!r} is too long: the pod hostname {hostname!r} is over 63 characters")
    if not command or not all(isinstance(c, str) for c in command):
        raise ValueError("no command: give it after `--`, e.g. -- python -m monitor_jax.main train --config=...")


def _finish(jobset: dict, env: Mapping[str, str], claim: str, mount: str) -> dict:
    """Extra environment variables and the shared work directory (a ReadWriteMany PersistentVolumeClaim)."""
    pod = pod_spec(jobset)
    container = pod["containers"][0]
    container["env"] = container.get("env", []) + [{"name": k, "value": v} for k, v in env.items()]
    for e in container["env"]:
        if "value" in e:
            e["value"] = str(e["value"])          # Kubernetes takes only strings
    if not container["env"]:
        del container["env"]
    if bool(claim) != bool(mount):
        raise ValueError("give --claim (a ReadWriteMany PersistentVolumeClaim) and --mount (its path) together")
    if claim:
        container["volumeMounts"].append({"name": "workdir", "mountPath": mount})
        pod["volumes"].append({"name": "workdir", "persistentVolumeClaim": {"claimName": claim}})
    return jobset


def tpu_jobset(name: str, image: str, command: Sequence[str], accelerator: str, topology: str, chips: int = 4,
               slices: int = 1, grace_seconds: int = 300, max_restarts: int = 3, env: Mapping[str, str] = {},
               claim: str = "", mount: str = "") -> dict:
    """tpu.yaml for `slices` TPU slices of `topology` (e.g. 4x4), `chips` chips per TPU VM."""
    if not re.fullmatch(r"\d+(x\d+)+", topology):
        raise ValueError(f"--topology={topology!r}: expected e.g. 2x2x2 or 4x4")
    total = math.prod(int(d) for d in topology.split("x"))
    if chips < 1 or total % chips:
        raise ValueError(f"--topology={topology} has {total} chips, not a multiple of --chips={chips} per TPU VM")
    hosts = total // chips
    _check(name, command, f"{name}-slice-{slices - 1}-{hosts - 1}")
    values = dict(NAME=name, IMAGE=image, COMMAND=list(command), ACCELERATOR=accelerator, TOPOLOGY=topology,
                  CHIPS=chips, HOSTS=hosts, SLICES=slices, GRACE_SECONDS=grace_seconds, MAX_RESTARTS=max_restarts)
    return _finish(fill(template("tpu.yaml"), values), env, claim, mount)


def gpu_jobset(name: str, image: str, command: Sequence[str], nodes: int = 2, gpus: int = 8, port: int = 8476,
               grace_seconds: int = 300, max_restarts: int = 3, env: Mapping[str, str] = {}, claim: str = "",
               mount: str = "", resources: Mapping[str, Any] | None = None) -> dict:
    """gpu.yaml for `nodes` pods of `gpus` GPUs each; `resources` replaces the container's (e.g. {} for none)."""
    _check(name, command, f"{name}-node-0-{nodes - 1}")
    values = dict(NAME=name, IMAGE=image, COMMAND=list(command), NODES=nodes, GPUS=gpus, PORT=port,
                  GRACE_SECONDS=grace_seconds, MAX_RESTARTS=max_restarts)
    jobset = fill(template("gpu.yaml"), values)
    if resources is not None:
        container = pod_spec(jobset)["containers"][0]
        container["resources"] = copy.deepcopy(dict(resources))
        if not resources:
            del container["resources"]
    return _finish(jobset, env, claim, mount)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="render.py", description=__doc__.split("\n\n")[0],
                                     epilog="The command follows `--`.")
    kinds = parser.add_subparsers(dest="kind", required=True)
    tpu, gpu = kinds.add_parser("tpu", help="multi-host TPU slices"), kinds.add_parser("gpu", help="multi-node GPU")
    for p in (tpu, gpu):
        p.add_argument("--name", required=True, help="the JobSet's name (and its pods' hostnames)")
        p.add_argument("--image", required=True, help="an image with monitor_jax installed")
        p.add_argument("--grace_seconds", "--grace-seconds", type=int, default=300,
                       help="terminationGracePeriodSeconds: time to finish the step and save after SIGTERM")
        p.add_argument("--max_restarts", "--max-restarts", type=int, default=3, help="restarts after crashes")
        p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--claim", default="", help="a ReadWriteMany PersistentVolumeClaim: the shared work directory")
        p.add_argument("--mount", default="", help="where the claim is mounted (the runs' workdir lives under it)")
    tpu.add_argument("--accelerator", required=True, help="cloud.google.com/gke-tpu-accelerator, e.g. "
                     "tpu-v5-lite-podslice, tpu-v4-podslice, tpu-v5p-slice, tpu-v6e-slice")
    tpu.add_argument("--topology", required=True, help="cloud.google.com/gke-tpu-topology, e.g. 4x4 or 2x2x2")
    tpu.add_argument("--chips", type=int, default=4, help="TPU chips per VM (google.com/tpu)")
    tpu.add_argument("--slices", type=int, default=1, help="TPU slices (multislice when > 1)")
    gpu.add_argument("--nodes", type=int, default=2, help="pods (one process each)")
    gpu.add_argument("--gpus", type=int, default=8, help="GPUs per pod (nvidia.com/gpu)")
    gpu.add_argument("--port", type=int, default=8476, help="the coordinator's port on process 0's pod")
    args = parser.parse_args(argv)
    env = {}
    for item in args.env:
        key, eq, value = item.partition("=")
        if not eq or not key:
            parser.error(f"--env={item!r}: expected KEY=VALUE")
        env[key] = value
    common = dict(name=args.name, image=args.image, command=command, grace_seconds=args.grace_seconds,
                  max_restarts=args.max_restarts, env=env, claim=args.claim, mount=args.mount)
    try:
        if args.kind == "tpu":
            out = tpu_jobset(accelerator=args.accelerator, topology=args.topology, chips=args.chips,
                             slices=args.slices, **common)
        else:
            out = gpu_jobset(nodes=args.nodes, gpus=args.gpus, port=args.port, **common)
    except ValueError as e:
        parser.error(str(e))
    sys.stdout.write(f"# Rendered from launch/gke/{args.kind}.yaml by launch/gke/render.py\n")
    sys.stdout.write(yaml.safe_dump(out, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
