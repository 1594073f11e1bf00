"""The sweep's report: sweep.json, sweep.md, and sweep.png (history and parameter importances)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openmed_ray.io.filesystem import write_bytes_atomic


def parameter_importances(summary: dict[str, Any]) -> dict[str, float]:
    """fANOVA importances (optuna) of the searched parameters over the scored trials.

    Raises ValueError when they are undefined (fewer than 2 scored trials, or no parameter
    varied)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    scored = [t for t in summary["trials"] if t["dev_f1"] is not None]
    varied = (
        [name for name in scored[0]["params"] if len({t["params"][name] for t in scored}) > 1]
        if scored
        else []
    )
    if len(scored) < 2 or not varied:
        raise ValueError("needs at least 2 scored trials with a varied parameter")
    distributions = {}
    for name in varied:
        values = [t["params"][name] for t in scored]
        if isinstance(values[0], int) and not isinstance(values[0], bool):
            distributions[name] = CategoricalDistribution(sorted(set(values)))
        else:
            distributions[name] = FloatDistribution(min(values), max(values))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for trial in scored:
        study.add_trial(
            optuna.trial.create_trial(
                params={name: trial["params"][name] for name in varied},
                distributions=distributions,
                value=trial["dev_f1"],
            )
        )
    return dict(optuna.importance.get_param_importances(study))


def write_report(summary: dict[str, Any], output: Path) -> None:
    """Write sweep.json, sweep.md and sweep.png into `output` (atomically)."""
    try:
        summary["parameter_importances"] = parameter_importances(summary)
    except ValueError as exc:
        summary["parameter_importances"] = {}
        summary["parameter_importances_unavailable"] = str(exc)
    write_bytes_atomic(json.dumps(summary, indent=2).encode(), output / "sweep.json")
    write_bytes_atomic(markdown(summary).encode(), output / "sweep.md")
    chart(summary, output / "sweep.png")


def markdown(summary: dict[str, Any]) -> str:
    final, best = summary["final"], summary["best"]
    test = final["test"]
    lines = [
        f"# Sweep: {summary['dataset']} / {summary['backbone']} ({summary['method']})",
        "",
        f"{len(summary['trials'])} trials, concurrency {summary['concurrency']}, "
        f"{summary['search_seconds']} s ({summary['trials_per_hour']} trials/hour). "
        f"{summary['protocol']}.",
        "",
        f"Best trial `{best['trial_id']}`: dev F1 {best['dev_f1']:.4f} with {best['params']}.",
        "",
        f"Final model (seed {final['seed']}, {final['epochs']} epochs): dev F1 "
        f"{final['dev']['f1']:.4f}; **test P {test['precision']:.4f} R {test['recall']:.4f} "
        f"F1 {test['f1']:.4f}**. Bundle: `{final['bundle']}`.",
        "",
        "| type | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in sorted(test.get("per_type", {}).items()):
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
            f"{row['support']} |"
        )
    lines += [
        "",
        "| trial | status | epochs | dev F1 | seconds | params |",
        "|---|---|---:|---:|---:|---|",
    ]
    for trial in summary["trials"]:
        f1 = "n/a" if trial["dev_f1"] is None else f"{trial['dev_f1']:.4f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial["params"].items())
        lines.append(
            f"| {trial['trial_id']} | {trial['status']} | {trial['epochs']} | {f1} | "
            f"{trial['seconds']} | {params} |"
        )
    importances = summary.get("parameter_importances") or {}
    if importances:
        lines += [
            "",
            "Parameter importances (fANOVA): "
            + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()),
        ]
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def chart(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = summary["trials"]
    scores = [t["dev_f1"] for t in trials]
    fig, (history, importance) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [i for i, s in enumerate(scores) if s is not None]
    history.scatter(xs, [scores[i] for i in xs], label="trial best dev F1")
    running, best = [], float("-inf")
    for i in xs:
        best = max(best, scores[i])
        running.append(best)
    history.step(xs, running, where="post", color="C1", label="best so far")
    history.set_xlabel("trial")
    history.set_ylabel("dev micro-F1")
    history.set_title("optimization history")
    history.legend(loc="lower right")
    importances = summary.get("parameter_importances") or {}
    if importances:
        names = list(importances)[::-1]
        importance.barh(names, [importances[n] for n in names])
        importance.set_title("parameter importance (fANOVA)")
    else:
        importance.text(0.5, 0.5, "importances unavailable", ha="center", va="center")
        importance.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
