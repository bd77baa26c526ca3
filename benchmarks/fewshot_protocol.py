"""The few-shot imaging protocol: medmeta's bundles beside the baselines and the peer libraries, same episodes.

    bash benchmarks/setup_peers.sh      # once: learn2learn and easyfsl into benchmarks/.peers
    .venv/bin/python benchmarks/fewshot_protocol.py --data-dir ../shared/data
    # a cheaper run: fine-tuning on fewer episodes, some peers; more peers merged in later
    .venv/bin/python benchmarks/fewshot_protocol.py --data-dir ../shared/data --finetune-shots 5 \
        --finetune-episodes 60 --peers easyfsl_PrototypicalNetworks
    .venv/bin/python benchmarks/fewshot_protocol.py --data-dir ../shared/data --add --peers easyfsl_MatchingNetworks

Every method is scored on the same seeded episodes (``medmeta.evaluation.protocol_results``):
meta-validation (val split of the 14 meta-training classes, 5-way) and the meta-test sets of
``medmeta.protocol`` (PneumoniaMNIST and BreastMNIST test splits 2-way; five held-out
OrganAMNIST classes 5-way), at 1, 5 and 10 shots with 15 queries per class, 600 episodes, mean
accuracy with a Student-t 95% CI. medmeta's learners are the shipped bundles, as trained by
``medmeta fewshot train``; the baselines and peers are trained here on the same meta-training
data with the budgets written into the results. Trained baselines and peers are cached in
``benchmarks/.cache`` (delete it to retrain). Writes ``benchmarks/results/fewshot_protocol.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import medmeta
from medmeta.bundle import load_bundle
from medmeta.evaluation import protocol_results
from medmeta.learners.base import load_learner
from medmeta.learners.baselines import ClassifierBaseline, FineTuneBaseline
from medmeta.protocol import meta_train_pool
from medmeta.tasks import EpisodeSampler

HERE = Path(__file__).resolve().parent
PEER_NAMES = ("easyfsl_PrototypicalNetworks", "easyfsl_MatchingNetworks", "learn2learn_PrototypicalClassifier",
              "learn2learn_MAML")
FINETUNE = "Fine-tuning, last block + cosine head (same backbone)"
BUNDLES = HERE.parent / "monai_bundles"


def bundle_methods() -> dict:
    """medmeta's learners as shipped, with their training record."""
    methods, budgets = {}, {}
    for name, label in (("fewshot_protonet_classification", "medmeta Prototypical (bundle)"),
                        ("fewshot_matching_classification", "medmeta Matching+FCE (bundle)")):
        methods[label] = load_bundle(BUNDLES / name)
        record = json.loads((BUNDLES / name / "models" / "training.json").read_text())
        budgets[label] = {"trained_by": f"medmeta fewshot train --bundle monai_bundles/{name}",
                          "seconds": record["seconds"], "threads": record["threads"],
                          "pretrain": record["training"].get("pretrain"),
                          "episodes": record["training"].get("episodes"),
                          "best_episode": record["training"].get("best_episode")}
    return methods, budgets


def trained(cache: Path, name: str, make, fit) -> tuple[object, dict]:
    """A baseline trained once (``fit``) and cached as safetensors (medmeta learners only)."""
    path = cache / name
    if (path / "config.json").exists():
        learner = load_learner(path)
        return learner, json.loads((path / "config.json").read_text())["training"]
    learner = make()
    start = time.monotonic()
    fit(learner)
    learner.history_["wall_seconds"] = time.monotonic() - start
    learner.save(path)
    return learner, {k: v for k, v in learner.history_.items() if not isinstance(v, list)}


def baseline_methods(args, x, keys) -> tuple[dict, dict]:
    """Closer-Look baselines (logistic regression / nearest centroid on frozen features) and fine-tuning.

    "same backbone": the bundles' ResNet-10 encoder, pre-trained as a plain classifier with the
    same augmentation for ``--baseline-epochs`` (by default twice the bundles' epochs: their
    pre-training also runs the rotation task on a second copy of every batch, so this is the
    same compute). "Conv-4": the paper's backbone.
    """
    methods, budgets = {}, {}
    train_config = json.loads((BUNDLES / "fewshot_protonet_classification" / "configs" / "train.json").read_text())
    reference = train_config["network_def"]
    arch = {k: reference[k] for k in ("in_channels", "hidden", "depth", "backbone", "image_size")}
    epochs = args.baseline_epochs or reference["pretrain_epochs"] * (2 if reference.get("rotation_weight") else 1)
    resnet, record = trained(args.cache, "closer_look_resnet",
                             lambda: ClassifierBaseline(**arch, head="logreg", augment=True, pretrain_epochs=epochs),
                             lambda m: m.fit(x, keys))
    budget = {"pretrain": record.get("pretrain"), "recipe": "plain 14-class classifier, same augmentation"}
    methods["Closer-Look baseline, logistic regression (same backbone)"] = resnet
    budgets["Closer-Look baseline, logistic regression (same backbone)"] = budget
    centroid = ClassifierBaseline(**arch, head="centroid")
    centroid.load_state_dict(resnet.state_dict(), strict=False)
    methods["Closer-Look baseline, nearest centroid (same backbone)"] = centroid.eval()
    budgets["Closer-Look baseline, nearest centroid (same backbone)"] = budget
    finetune = FineTuneBaseline(**{k: v for k, v in arch.items()}, steps=args.finetune_steps, finetune="top")
    finetune.load_state_dict({k: v for k, v in resnet.state_dict().items() if k.startswith("encoder.")},
                             strict=False)
    methods[FINETUNE] = finetune.eval()
    budgets[FINETUNE] = {
        **budget, "per_task": f"{args.finetune_steps} Adam steps (lr 1e-3) on the support set"}
    conv4, record = trained(args.cache, "closer_look_conv4",
                            lambda: ClassifierBaseline(in_channels=3, hidden=64, depth=4, head="logreg", augment=True,
                                                       pretrain_epochs=args.conv4_epochs),
                            lambda m: m.fit(x, keys))
    methods["Closer-Look baseline, logistic regression (Conv-4)"] = conv4
    budgets["Closer-Look baseline, logistic regression (Conv-4)"] = {
        "pretrain": record.get("pretrain"), "recipe": "plain 14-class classifier, Conv-4 (64 filters)"}
    return methods, budgets


def peer_methods(args, x, keys) -> tuple[dict, dict]:
    """learn2learn and easyfsl, each meta-trained for ``--peer-episodes`` 5-way 5-shot 15-query episodes.

    A budget in episodes (not seconds) so that a busy machine does not cut a peer's training short.
    """
    from peers import L2LMAML, EasyFSLMethod, L2LProto

    methods, budgets = {}, {}
    budget = {"max_episodes": args.peer_episodes, "max_seconds": float("inf")}
    every = {"easyfsl_PrototypicalNetworks": lambda: EasyFSLMethod("PrototypicalNetworks", **budget),
             "easyfsl_MatchingNetworks": lambda: EasyFSLMethod("MatchingNetworks", **budget),
             "learn2learn_PrototypicalClassifier": lambda: L2LProto(**budget),
             "learn2learn_MAML": lambda: L2LMAML(**budget)}
    for key in args.peers:
        peer = every[key]()
        path = args.cache / f"peer_{peer.name.replace(' ', '_')}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
            peer.module.load_state_dict(saved["state"])
            peer.history_ = saved["history"]
        else:
            peer.fit_episodes(EpisodeSampler(keys, 5, 5, 15, seed=0).tasks(x))
            torch.save({"state": peer.module.state_dict(), "history": peer.history_}, path)
        peer.module.eval()
        methods[peer.name] = peer
        budgets[peer.name] = {**peer.history_, "episodes_per_second": peer.history_["episodes"]
                              / peer.history_["seconds"]}
    return methods, budgets


def reductions(args) -> list[str]:
    """What this run left out of the full protocol (600 episodes, 1/5/10 shots, every peer), in words."""
    out = []
    if args.episodes != 600 or sorted(args.shots) != [1, 5, 10]:
        out.append(f"every method: {args.episodes} episodes per cell at {args.shots} shots")
    if args.finetune_episodes or args.finetune_shots:
        out.append(f"{FINETUNE}: only the first {args.finetune_episodes or args.episodes} episodes of each cell, "
                   f"at {args.finetune_shots or args.shots} shots (it trains on every episode's support set)")
    skipped_sets = [b for b in ("pneumonia", "breast", "organa-held-out", "meta-val") if b not in args.benchmarks]
    if skipped_sets:
        out.append(f"sets not run: {', '.join(skipped_sets)}")
    left_out = [p for p in PEER_NAMES if args.no_peers or p not in args.peers]
    if left_out:
        out.append(f"peers not run: {', '.join(left_out)}")
    return out


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` over the same episodes, with its Student-t 95% half-width."""
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))


def cell(rows: list[dict], method: str, shots: int, episodes: int) -> str:
    """``accuracy ± ci`` (%) of one method at one shot count, "–" where not run, the episode count when fewer."""
    found = [r for r in rows if r["method"] == method and r["shots"] == shots]
    if not found:
        return "–"
    r = found[0]
    fewer = f" ({r['episodes']} ep.)" if r["episodes"] != episodes else ""
    return f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f}{fewer}"


def verdict(report: dict, ours: str) -> list[str]:
    """The issue's goal, checked: at 5 shots, is ``ours`` better than every other method on every meta-test set?

    "Better" means the paired 95% CI of the difference (same episodes) lies above zero.
    """
    lines = []
    for d in (d for d in report["paired_5shot"] if d["ours"] == ours and d["benchmark"] != "meta-val"):
        low, high = d["mean"] - d["ci95"], d["mean"] + d["ci95"]
        if low <= 0:
            word = "worse than" if high < 0 else "not distinguishable from"
            fewer = f", on its {d['episodes']} episodes" if d["episodes"] != report["episodes"] else ""
            lines.append(f"{d['benchmark']}: {word} {d['other']} ({100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f} "
                         f"points{fewer})")
    head = (f"Goal (beat every baseline and peer on every meta-test set at 5 shots) for {ours}: "
            + ("met, every paired difference is above zero." if not lines else "NOT met:"))
    return [head] + [f"- {line}" for line in lines]


def markdown(report: dict) -> str:
    rows = report["results"]
    lines = ["# Few-shot imaging protocol: medmeta beside baselines and peers", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']}  ",
             f"Episodes: {report['episodes']} per cell, {report['queries']} queries per class, the same episodes "
             "for every method; mean accuracy (%) ± 95% CI half-width.", ""]
    if report["reductions"]:
        lines += ["Reduced from the full protocol in this run (to fit about an hour on a shared 2-core CPU):", ""]
        lines += [f"- {r}" for r in report["reductions"]] + [""]
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        sub = [r for r in rows if r["benchmark"] == bench]
        shots = sorted({r["shots"] for r in sub})
        lines += [f"## {bench} ({sub[0]['ways']}-way)", "", "| method | " + " | ".join(f"{k}-shot" for k in shots)
                  + " |", "|---|" + "---|" * len(shots)]
        for method in dict.fromkeys(r["method"] for r in sub):
            cells = [cell(sub, method, k, report["episodes"]) for k in shots]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Paired differences at 5 shots (same episodes; percentage points, 95% CI)", "",
              "| benchmark | medmeta learner | vs | difference |", "|---|---|---|---|"]
    for d in report["paired_5shot"]:
        fewer = f" ({d['episodes']} ep.)" if d["episodes"] != report["episodes"] else ""
        lines.append(f"| {d['benchmark']} | {d['ours']} | {d['other']} | "
                     f"{100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f}{fewer} |")
    lines += ["", "## Goal at 5 shots", ""]
    for ours in dict.fromkeys(d["ours"] for d in report["paired_5shot"]):
        lines += [*verdict(report, ours), ""]
    lines += ["## Training budgets", "", "```json", json.dumps(report["budgets"], indent=1), "```", "",
              "The machine was shared with other jobs while this ran; speeds are rough. "
              + medmeta.DISCLAIMER]
    return "\n".join(lines) + "\n"


def bundle_summaries(report: dict) -> None:
    """Write each bundle's results into its docs/README.md (between markers) and metadata ``eval_metrics``."""
    rows = report["results"]
    baselines = [m for m in dict.fromkeys(r["method"] for r in rows) if not m.startswith("medmeta")]
    for name, label in (("fewshot_protonet_classification", "medmeta Prototypical (bundle)"),
                        ("fewshot_matching_classification", "medmeta Matching+FCE (bundle)")):
        mine = [r for r in rows if r["method"] == label]
        if not mine:
            continue
        lines = [f"Command: `{report['command']}` ({report['machine']}). {report['episodes']} episodes per cell, "
                 f"{report['queries']} queries per class, the same episodes for every method; mean accuracy (%) "
                 "± 95% CI half-width. Full table, paired differences and training budgets: "
                 "`benchmarks/results/fewshot_protocol.md`.", ""]
        lines += [f"- reduced in this run: {r}" for r in report["reductions"]] + [""] * bool(report["reductions"])
        for bench in dict.fromkeys(r["benchmark"] for r in mine):
            shots = sorted({r["shots"] for r in mine if r["benchmark"] == bench})
            ways = next(r["ways"] for r in mine if r["benchmark"] == bench)
            lines += [f"**{bench}** ({ways}-way)", "", "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |",
                      "|---|" + "---|" * len(shots)]
            for method in [label, *baselines]:
                cells = [cell([r for r in rows if r["benchmark"] == bench], method, k, report["episodes"])
                         for k in shots]
                shown = f"**{method}**" if method == label else method
                lines.append(f"| {shown} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += verdict(report, label)
        readme = BUNDLES / name / "docs" / "README.md"
        text = readme.read_text()
        start, end = "<!-- results:start -->", "<!-- results:end -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])
        meta_path = BUNDLES / name / "configs" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["eval_metrics"] = {f"{r['benchmark']}_{r['ways']}way_{r['shots']}shot_accuracy":
                                round(r["accuracy"], 4) for r in mine}
        meta_path.write_text(json.dumps(meta, indent=4) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--peer-episodes", type=int, default=2000)
    parser.add_argument("--baseline-epochs", type=float, default=None)
    parser.add_argument("--conv4-epochs", type=float, default=10.0)
    parser.add_argument("--finetune-steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peers", action="store_true", help="Leave out learn2learn and easyfsl.")
    parser.add_argument("--peers", nargs="+", default=list(PEER_NAMES), choices=PEER_NAMES,
                        help="Which peer implementations to train and score.")
    parser.add_argument("--finetune-episodes", type=int, default=None,
                        help="Score fine-tuning (the slow baseline: training per episode) on only the first N "
                             "of the same episodes (default: all).")
    parser.add_argument("--finetune-shots", type=int, nargs="+", default=None,
                        help="Score fine-tuning at these shots only (default: all).")
    parser.add_argument("--train-only", action="store_true", help="Train and cache the baselines and peers, then stop.")
    parser.add_argument("--benchmarks", nargs="+", default=["pneumonia", "breast", "organa-held-out", "meta-val"],
                        help="Which sets to score, in this order.")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fewshot_protocol")
    parser.add_argument("--render", action="store_true",
                        help="Only rewrite the Markdown and the bundles' result sections from the JSON (no scoring).")
    parser.add_argument("--add", action="store_true",
                        help="Score --peers on the episodes of the existing results and merge them in.")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(markdown(report))
        bundle_summaries(report)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))

    x, keys = meta_train_pool("train", 3, 28, args.data_dir)
    if args.add:
        add_peers(args, x, keys)
        return
    others, budgets = baseline_methods(args, x, keys)
    if not args.no_peers:
        more, more_budgets = peer_methods(args, x, keys)
        others.update(more)
        budgets.update(more_budgets)
    if args.train_only:
        return
    methods, more_budgets = bundle_methods()
    methods.update(others)
    budgets.update(more_budgets)

    accuracies: dict = {}
    start = time.monotonic()
    reduced = {}
    if args.finetune_episodes or args.finetune_shots:  # the same seeded episodes: the first N of each cell
        reduced = {FINETUNE: methods.pop(FINETUNE)}
        budgets[FINETUNE]["scored_on"] = (f"the first {args.finetune_episodes or args.episodes} of the "
                                          f"{args.episodes} episodes, at {args.finetune_shots or args.shots} shots")
    # the meta-test sets first, meta-validation last; the report is rewritten after each, so that a
    # run stopped early still leaves what it measured (the sets not reached are listed as such)
    order = [*args.benchmarks]
    results: list[dict] = []
    for n, bench in enumerate(order):
        results += protocol_results(methods, args.data_dir, shots=args.shots, episodes=args.episodes,
                                    queries=args.queries, accuracies=accuracies, benchmarks=[bench])
        if reduced:
            results += protocol_results(reduced, args.data_dir, shots=args.finetune_shots or args.shots,
                                        episodes=args.finetune_episodes or args.episodes, queries=args.queries,
                                        accuracies=accuracies, benchmarks=[bench])
        write_report(args, {**methods, **reduced}, budgets, results, accuracies, time.monotonic() - start,
                     not_reached=order[n + 1:])
    print(markdown(json.loads(args.out.with_suffix(".json").read_text())))


def add_peers(args, x, keys) -> None:
    """Score ``--peers`` on the episodes of the existing report and merge them into it (``--add``).

    The episodes are drawn from the same seeds, so the peers' rows and paired differences are
    on the same episodes as the rest; the per-episode accuracies come from the cache.
    """
    report = json.loads(args.out.with_suffix(".json").read_text())
    saved = np.load(args.cache / "episode_accuracies.npz")
    accuracies = {(k.split("|")[0], int(k.split("|")[1]), k.split("|", 2)[2]): saved[k] for k in saved.files}
    new, budgets = peer_methods(args, x, keys)
    results = [r for r in report["results"] if r["method"] not in new]
    start = time.monotonic()
    for bench in dict.fromkeys(r["benchmark"] for r in results):
        results += protocol_results(new, args.data_dir, shots=report["shots"], episodes=report["episodes"],
                                    queries=report["queries"], accuracies=accuracies, benchmarks=[bench])
    methods = dict.fromkeys(r["method"] for r in results)
    missing = [p for p in PEER_NAMES if p.replace("_", " ", 1) not in methods]
    notes = [n for n in report["reductions"] if not n.startswith("peers not run")]
    notes += [f"peers not run: {', '.join(missing)}"] if missing else []
    write_report(args, methods, {**report["budgets"], **budgets}, results, accuracies,
                 report["evaluation_seconds"] + time.monotonic() - start, [], notes=notes,
                 command=f"{report['command']} && python benchmarks/fewshot_protocol.py {' '.join(sys.argv[1:])}")


def write_report(args, methods: dict, budgets: dict, results: list[dict], accuracies: dict, seconds: float,
                 not_reached: list[str], *, notes: list[str] | None = None, command: str | None = None) -> None:
    """``fewshot_protocol.{json,md}``, the bundles' result sections and the per-episode accuracies."""
    ours = [m for m in methods if m.startswith("medmeta")]
    paired = []
    for bench in dict.fromkeys(r["benchmark"] for r in results):
        for mine in ours:
            for other in (m for m in methods if m not in ours):
                if (bench, 5, other) in accuracies:
                    theirs = accuracies[(bench, 5, other)]  # a prefix of the same episodes when reduced
                    mean, ci = paired_difference(accuracies[(bench, 5, mine)][:len(theirs)], theirs)
                    paired.append({"benchmark": bench, "ours": mine, "other": other, "mean": mean, "ci95": ci,
                                   "episodes": len(theirs)})
    notes = (reductions(args) if notes is None else notes) + (
        [f"not reached before the run stopped: {', '.join(not_reached)}"] if not_reached else [])
    report = {
        "command": command or "python benchmarks/fewshot_protocol.py " + " ".join(sys.argv[1:]),
        "reductions": notes,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} torch "
                   f"thread(s), shared with other jobs; python {platform.python_version()}, torch {torch.__version__}",
        "episodes": args.episodes, "queries": args.queries, "shots": args.shots,
        "evaluation_seconds": round(seconds), "budgets": budgets, "results": results,
        "paired_5shot": paired, "medmeta_version": medmeta.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(report))
    bundle_summaries(report)
    np.savez_compressed(args.cache / "episode_accuracies.npz",
                        **{"|".join(map(str, k)): v for k, v in accuracies.items()})


if __name__ == "__main__":
    main()
