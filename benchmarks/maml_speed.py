"""MAML engine speed: meta-training throughput (tasks/s) and adaptation latency per patient.

Three implementations run the same computation on the same networks and tasks:

- medmeta: ``medmeta.learners.maml`` (torch.func: ``vmap`` over the tasks of a meta-batch, padded);
- loop: a plain Python loop over tasks with ``torch.autograd.grad(create_graph=True)``;
- learn2learn 0.2.0 ``MetaSGD`` (``clone()`` / ``adapt()``), when it is importable.

Workloads: the warfarin model (79 features -> 32 -> 1 on the IWPC prior; group tasks, support 0-50 patients, query
<= 64; meta-batch 16, 1 inner step, L1 loss) and the glucose model (14 inputs -> 32 -> 32 -> 12 horizons; subject
tasks, a day of support, 256 query points; meta-batch 8, 3 inner steps, MSE). Second and first order.
Writes benchmarks/results/maml_speed.json and .md.

    bash benchmarks/learn2learn_venv.sh        # once: a side venv with learn2learn (not in the project's .venv)
    .venv-learn2learn/bin/python benchmarks/maml_speed.py [--data-dir ../shared/data]
    .venv/bin/python benchmarks/maml_speed.py  # without learn2learn

One torch thread. The machine is shared with other jobs: compare methods within one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

from medmeta.datasets.cgm import load_cgm
from medmeta.datasets.warfarin import load_iwpc
from medmeta.learners.maml import LOSSES, MAML, meta_gradient, stack_tasks
from medmeta.paths import CGM_HALL_CSV, WARFARIN_CSV, data_path
from medmeta.treatment.glucose import GlucoseForecaster
from medmeta.treatment.warfarin import WarfarinDoseModel
from medmeta.treatment.warfarin_features import patient_groups


def _stub_torchvision() -> None:
    """learn2learn imports torchvision (its vision data sets) at import time; there is no CPU torchvision here.

    Nothing on the MAML path uses it, so empty placeholder modules stand in (only when the real one is missing).
    """
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("torchvision") is not None:
        return

    class Placeholder(types.ModuleType):
        __path__ = ()  # a package, so that submodules import

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return Placeholder(spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


try:
    _stub_torchvision()
    import learn2learn as l2l
except ImportError:  # the benchmark runs without it
    l2l = None

HERE = Path(__file__).resolve().parent


def workloads(data_dir):
    """(name, network factory, tasks, loss, inner steps, meta-batch size) for both treatment models."""
    frame = load_iwpc(data_path(WARFARIN_CSV, data_dir)).data
    w = WarfarinDoseModel(members=2, meta_steps=0).fit(frame)  # feature scaling and the prior, no training
    dosed = frame[frame["dose_mg_week"].notna()].reset_index(drop=True)
    x, z = w._matrix(dosed), w._target(dosed["dose_mg_week"].astype(float).to_numpy())
    w_tasks = list(itertools.islice(w.group_tasks(x, z, patient_groups(dosed).to_numpy(), seed=1), 640))

    series = load_cgm(data_path(CGM_HALL_CSV, data_dir)).data
    g = GlucoseForecaster(seed=1)
    g_tasks = list(itertools.islice(g.subject_tasks([g.points(s) for s in series.values()]), 160))
    return [("warfarin", w._network, w_tasks, "l1", 1, 16), ("glucose", g._network, g_tasks, "mse", 3, 8)]


def batches(tasks, size):
    return [tasks[i:i + size] for i in range(0, len(tasks) - size + 1, size)]


def run_medmeta(make, tasks, loss, steps, size, first_order):
    maml = MAML(make(), loss=loss, inner_steps=steps, inner_lr=0.01, first_order=first_order)
    opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
    named = dict(maml.named_parameters())
    first = None
    for batch in batches(tasks, size):
        value, gp, gl = meta_gradient(maml.model, maml.params(), maml.lrs(), stack_tasks(batch), loss=loss,
                                      steps=steps, first_order=first_order, buffers=maml.buffers_())
        first = float(value) if first is None else first
        opt.zero_grad()
        for n, g in gp.items():
            named[f"model.{n}"].grad = g
        for n, g in gl.items():
            named[f"inner_lrs.{n.replace('.', '__')}"].grad = g
        opt.step()
    return first, maml


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def run_loop(make, tasks, loss, steps, size, first_order):
    model = make()
    params = {n: p for n, p in model.named_parameters()}
    lrs = {n: torch.full_like(p, 0.01, requires_grad=True) for n, p in params.items()}
    buffers = dict(model.named_buffers())
    fn = LOSSES[loss]
    opt = torch.optim.Adam([*params.values(), *lrs.values()], lr=1e-3)
    first = None
    for batch in batches(tasks, size):
        total = 0.0
        for t in batch:
            fast = dict(params)
            sx, sy = _t(t.support_x), _t(t.support_y)
            for _ in range(steps if len(sx) else 0):
                inner = fn(functional_call(model, (fast, buffers), (sx,)), sy).mean()
                grads = torch.autograd.grad(inner, list(fast.values()), create_graph=not first_order)
                fast = {n: fast[n] - lrs[n] * g for n, g in zip(fast, grads, strict=True)}
            total = total + fn(functional_call(model, (fast, buffers), (_t(t.query_x),)), _t(t.query_y)).mean()
        total = total / len(batch)
        first = float(total) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    return first, (model, params, lrs, buffers)


def run_l2l(make, tasks, loss, steps, size, first_order):
    meta = l2l.algorithms.MetaSGD(make(), lr=0.01, first_order=first_order)
    fn = LOSSES[loss]
    opt = torch.optim.Adam(meta.parameters(), lr=1e-3)
    first = None
    for batch in batches(tasks, size):
        opt.zero_grad()
        total = 0.0
        for t in batch:
            learner = meta.clone()
            sx, sy = _t(t.support_x), _t(t.support_y)
            for _ in range(steps if len(sx) else 0):
                learner.adapt(fn(learner(sx), sy).mean())
            total = total + fn(learner(_t(t.query_x)), _t(t.query_y)).mean()
        total = total / len(batch)
        first = float(total) if first is None else first
        total.backward()
        opt.step()
    return first, meta


def timed(fn, *args, repeats=3):
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def adaptation_latency(kind, trained, tasks, loss, steps):
    """Median ms to adapt on one task's support set and predict its query set."""
    fn = LOSSES[loss]
    times = []
    for t in tasks[:100]:
        if len(t.support_x) == 0:
            continue
        start = time.perf_counter()
        if kind == "medmeta":
            trained.adapt(t.support_x, t.support_y).predict(t.query_x)
        elif kind == "loop":
            model, params, lrs, buffers = trained
            fast = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            sx, sy = _t(t.support_x), _t(t.support_y)
            for _ in range(steps):
                grads = torch.autograd.grad(fn(functional_call(model, (fast, buffers), (sx,)), sy).mean(),
                                            list(fast.values()))
                fast = {n: (fast[n] - lrs[n].detach() * g).detach().requires_grad_(True)
                        for n, g in zip(fast, grads, strict=True)}
            with torch.no_grad():
                functional_call(model, (fast, buffers), (_t(t.query_x),))
        else:
            learner = trained.clone()
            sx, sy = _t(t.support_x), _t(t.support_y)
            for _ in range(steps):
                learner.adapt(fn(learner(sx), sy).mean())
            with torch.no_grad():
                learner(_t(t.query_x))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "maml_speed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    impls = {"medmeta": run_medmeta, "loop": run_loop, **({"learn2learn": run_l2l} if l2l else {})}
    rows = []
    for name, make, tasks, loss, steps, size in workloads(args.data_dir):
        n_tasks = len(batches(tasks, size)) * size
        for first_order in (False, True):
            losses = {}
            for impl, fn in impls.items():
                torch.manual_seed(0)
                seconds, (first_loss, trained) = timed(fn, make, tasks, loss, steps, size, first_order)
                losses[impl] = first_loss
                rows.append({"workload": name, "order": "first" if first_order else "second", "implementation": impl,
                             "tasks": n_tasks, "meta_batch": size, "inner_steps": steps,
                             "tasks_per_second": round(n_tasks / seconds, 1),
                             "adapt_ms_per_patient": round(adaptation_latency(impl, trained, tasks, loss, steps), 3),
                             "first_batch_loss": round(first_loss, 6)})
                print(rows[-1], flush=True)
    result = {"command": "python benchmarks/maml_speed.py", "machine": f"{platform.machine()}, 1 torch thread, "
              f"{platform.platform()}, torch {torch.__version__}",
              "learn2learn": getattr(l2l, "__version__", None), "rows": rows}
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# MAML engine speed", "", f"Command: `{result['command']}` (from the learn2learn side venv, see the "
             "script).  ", f"Machine: {result['machine']}; shared with other jobs, so compare within this table.  ",
             f"learn2learn: {result['learn2learn'] or 'not installed'}.", "",
             "Meta-training: best of 3 passes over the same tasks. Adaptation: median over 100 tasks of adapting on "
             "the support set and predicting the query set. `first_batch_loss` is the same for all implementations "
             "when they compute the same thing (padding and per-task losses included).", "",
             "| workload | order | implementation | tasks | meta-batch | inner steps | tasks/s | adapt ms/patient | "
             "first-batch loss |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['workload']} | {r['order']} | {r['implementation']} | {r['tasks']} | {r['meta_batch']} | "
              f"{r['inner_steps']} | {r['tasks_per_second']} | {r['adapt_ms_per_patient']} | {r['first_batch_loss']} |"
              for r in rows]
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
