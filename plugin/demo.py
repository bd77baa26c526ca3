"""The main job on the embedded sample data: learning to learn, then a small hospital's FHIR export scored.

1. :func:`run_fewshot` meta-trains a Prototypical network on the meta-training classes of the sample
   images for a bounded time, measures its few-shot accuracy (mean over episodes, 95% CI) on data sets
   it never saw (:mod:`medmeta.protocol`), and saves it (safetensors, weights only);
2. :func:`build_sample_export` turns the samples into one FHIR source, as a hospital would hold them:
   the Synthea patient Bundles and the Bulk Data export as they are, the IWPC warfarin patients and the
   CGM subjects converted to FHIR (``medmeta fhir from-iwpc`` / ``from-cgm``);
3. the batch job (:func:`medmeta.batch.run_batch`) scores every patient and writes FHIR results, rejects
   and a manifest.

With ``data_dir`` (or ``MEDMETA_DATA``) the same runs on the full data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import medmeta
from medmeta import paths


@dataclass
class DemoConfig:
    output: Path = Path("runs/demo")
    data_dir: Path | None = None
    workers: int = 1
    budget_seconds: float = 60.0  # few-shot meta-training
    eval_episodes: int = 200
    shots: int = 5
    queries: int = 15
    seed: int = 0


def run_fewshot(cfg: DemoConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Meta-train, meta-test on unseen data, save into ``output/fewshot``; return what ``results.json`` holds."""
    import torch

    from medmeta.evaluation import draw_episodes, episode_accuracies, summary
    from medmeta.learners import PrototypicalNetwork
    from medmeta.protocol import META_TEST_SETS, meta_test_pool, meta_train_pool
    from medmeta.tasks import EpisodeSampler

    torch.manual_seed(cfg.seed)
    x, keys = meta_train_pool("train", data_dir=cfg.data_dir)
    train = EpisodeSampler(keys, n_way=5, k_shot=cfg.shots, n_query=cfg.queries, seed=cfg.seed)
    learner = PrototypicalNetwork(in_channels=3, max_seconds=cfg.budget_seconds, max_episodes=10**9, seed=cfg.seed)
    learner.meta_fit(train.tasks(x), show_progress=show_progress)

    vx, vkeys = meta_train_pool("val", data_dir=cfg.data_dir)
    benchmarks = [("meta-val (seen classes, unseen images)", vx, vkeys, 5)]
    benchmarks += [(f"meta-test {b.name}", *meta_test_pool(b, data_dir=cfg.data_dir), b.n_way) for b in META_TEST_SETS]
    evaluations = []
    for index, (name, bx, bkeys, n_way) in enumerate(benchmarks):
        episodes = draw_episodes(bkeys, n_way, cfg.shots, cfg.queries, cfg.eval_episodes, seed=(cfg.seed, index))
        evaluations.append({"benchmark": name, "ways": n_way, "shots": cfg.shots,
                            **summary(episode_accuracies(learner, bx, episodes))})
    out = Path(cfg.output) / "fewshot"
    model_dir = learner.save(out / "model")
    results = {
        "medmeta_version": medmeta.__version__,
        "data_dir": str(paths.data_dir(cfg.data_dir)),
        "budget_seconds": cfg.budget_seconds,
        "training": {k: v for k, v in learner.history_.items() if not isinstance(v, list)},
        "evaluations": evaluations,
        "model": str(model_dir),
        "disclaimer": medmeta.DISCLAIMER,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def build_sample_export(out: Path, data_dir: Path | None = None) -> dict[str, Any]:
    """Write the sample FHIR source into ``out`` and return what went into it (also in ``<out>.json``).

    It is built once per data root: an export built from another data root is built again.
    """
    from medmeta.datasets.cgm import load_cgm
    from medmeta.datasets.warfarin import load_iwpc
    from medmeta.fhir import iwpc_resources, write_ndjson
    from medmeta.fhir.cgm import cgm_resources

    done = out.with_suffix(".json")
    root = str(paths.data_dir(data_dir).resolve())
    if done.exists() and (built := json.loads(done.read_text())).get("data_dir") == root:
        return built
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(paths.data_path(paths.SYNTHEA_BUNDLES, data_dir), tmp / "synthea")
    shutil.copytree(paths.data_path(paths.BULK_EXPORT, data_dir), tmp / "bulk")
    frame, iwpc_rejected = load_iwpc(paths.data_path(paths.WARFARIN_CSV, data_dir))
    iwpc = write_ndjson((r for row in frame.to_dict("records") for r in iwpc_resources(row)), tmp / "iwpc")
    series, cgm_rejected = load_cgm(paths.data_path(paths.CGM_HALL_CSV, data_dir))
    cgm = write_ndjson((r for s in series.values() for r in cgm_resources(s)), tmp / "cgm")
    contents = {
        "data_dir": root,
        "synthea_bundles": len(list((tmp / "synthea").glob("*.json*"))),
        "bulk_export_files": len(list((tmp / "bulk").glob("*.ndjson*"))),
        "iwpc": {"patients": len(frame), "csv_rows_rejected": len(iwpc_rejected), "resources": iwpc},
        "cgm": {"subjects": len(series), "csv_rows_rejected": len(cgm_rejected), "resources": cgm},
    }
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    done.write_text(json.dumps(contents, indent=2))
    return contents


def run_demo(cfg: DemoConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """The few-shot stage (``output/fewshot``), then the sample export (``output/export``) scored into
    ``output/results``; return the batch manifest with ``fewshot`` and ``sample_export`` added."""
    from medmeta.batch import BatchConfig, run_batch

    output = Path(cfg.output)
    fewshot = run_fewshot(cfg, show_progress=show_progress)
    contents = build_sample_export(output / "export", cfg.data_dir)
    manifest = run_batch(BatchConfig(source=str(output / "export"), output=output / "results", workers=cfg.workers),
                         show_progress=show_progress)
    return {**manifest, "fewshot": fewshot, "sample_export": contents}
