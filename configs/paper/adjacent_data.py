"""Fixed small in-domain data plus a growing adjacent-domain set (demo suite, CPU).

Every run trains on the same 100 agent transcripts (control_arena, the monitored domain) plus N rows of the
adjacent harmful-request domains (chem_harm and cyber_harm, N/2 each), N = 0, 300, 1200, 4800, with the
demo's instruction data at r = 0.75. Sources are weighted by their row counts, so every row is drawn about
equally often (one pooled dataset): as N grows, the in-domain rows' share of the classification batch
shrinks. Does adjacent data help beyond a little in-domain data? `report --sweep` plots AUROC against N.

    python -m monitor_jax.main sweep --config=configs/paper/adjacent_data.py
    python -m monitor_jax.main report --sweep=runs/adjacent_data

On your data: --config.data_root=/path (docs/tasks.md lists the files); N must not exceed the train files.
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))
IN_DOMAIN_ROWS = 100
ADJACENT_ROWS = (0, 300, 1200, 4800)


def training_sets(research, adjacent: int) -> list:
    """The in-domain rows, plus `adjacent` rows split between the two adjacent domains, weighted by rows."""
    sets = [{"task": "control_arena", "source": research("control_arena", "train", IN_DOMAIN_ROWS),
             "weight": float(IN_DOMAIN_ROWS)}]
    for domain in ("chem_harm", "cyber_harm") if adjacent else ():
        sets.append({"task": domain, "source": research(domain, "train", adjacent // 2), "weight": adjacent / 2})
    return sets


def get_config():
    c = _demo_config["get_config"]()
    research = _demo_config["research"]
    c.workdir = "runs/adjacent_data"
    c.train.best_metric = ""
    c.data.classification = training_sets(research, 0)
    c.eval.tasks = [
        {"task": "control_arena", "source": research("control_arena", "test", 300), "heldout": False},
        {"task": "chem_harm", "source": research("chem_harm", "test", 300), "heldout": False},
        {"task": "cyber_harm", "source": research("cyber_harm", "test", 300), "heldout": False},
        {"task": "covert_reasoning", "source": research("covert_reasoning", "test", 300), "heldout": True},
        {"task": "imdb", "source": research("imdb", "test", 300), "heldout": True},
    ]
    c.sweep.grid = (("data.classification", tuple(training_sets(research, n) for n in ADJACENT_ROWS),
                     tuple(str(n) for n in ADJACENT_ROWS)),)
    return c
