"""A sweep's report: markdown (best trial, top trials), Optuna's plots and the best overrides as
a YAML file for `harness run --set-file`, written beside the other reports."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_sweep_report(study, spec, out_dir: Path) -> None:
    """`sweep_<name>.md`, `sweep_<name>_{history,importances,slice}.png` and
    `sweep_<name>_best.yaml` in out_dir, from the study's trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    name = spec.name
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    plots = []
    for kind, fn in (("history", ovm.plot_optimization_history), ("importances", ovm.plot_param_importances),
                     ("slice", ovm.plot_slice)):
        try:
            ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            path = out_dir / f"sweep_{name}_{kind}.png"
            fig.savefig(path, dpi=80, bbox_inches="tight", metadata={"Software": None})
            plt.close(fig)
            plots.append(path.name)
        except Exception as exc:  # e.g. importances need >= 2 complete trials
            print(f"plot {kind} skipped: {exc}")
    reverse = spec.objective.direction == "maximize"
    top = sorted(complete, key=lambda t: t.value, reverse=reverse)[:10]
    lines = [f"# Sweep: {name}", "", f"Base: `{spec.experiment}` row `{spec.row}`, seeds "
             f"{spec.seeds}; objective: {spec.objective.direction} `{spec.objective.metric}`; "
             f"{len(study.trials)} trials ({len(complete)} complete, "
             f"{sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)} pruned, "
             f"{sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)} failed).", ""]
    if best is not None:
        lines += [f"Best: trial {best.number}, {spec.objective.metric} = {100 * best.value:.2f} %", ""]
        lines += ["| param | value |", "| :--- | :---: |"] + [f"| `{k}` | {v:.4g} |" if isinstance(v, float)
                                                             else f"| `{k}` | {v} |" for k, v in best.params.items()]
        lines += ["", f"Best overrides: [`sweep_{name}_best.yaml`](sweep_{name}_best.yaml) "
                  f"(use with `harness run --set-file`).", ""]
        (out_dir / f"sweep_{name}_best.yaml").write_text(yaml.safe_dump(dict(best.params), sort_keys=True))
    keys = list(spec.space)
    lines += ["## Top trials", "", "| trial | value | " + " | ".join(f"`{k}`" for k in keys) + " |",
              "| :--- | :---: | " + " | ".join(":---:" for _ in keys) + " |"]
    for t in top:
        vals = " | ".join(f"{t.params[k]:.4g}" if isinstance(t.params.get(k), float) else str(t.params.get(k))
                          for k in keys)
        lines.append(f"| {t.number} | {100 * t.value:.2f} | {vals} |")
    lines += [""] + [f"![{p}]({p})" for p in plots]
    (out_dir / f"sweep_{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / f'sweep_{name}.md'}")


__all__ = ["write_sweep_report"]
