"""A sweep's report: `sweep_<name>.md` with its protocol, the search trials (mean ± std over
their search seeds), the confirmation side by side with the search and the winner's test
against the defaults; `sweep_<name>.json` with every number; `sweep_<name>_best.yaml` (the
winner's values for `harness run --set-file`); and plots whose axes name the metric in percent.

Optuna's parameter-importance plot is drawn only from `MIN_IMPORTANCE_TRIALS` complete trials
on: a random-forest importance fitted on a handful of trials ranks parameters by noise (on 6
trials it rated an optimizer below 0.01 although every trial of one optimizer was 4 points
worse); below that the report says so instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

from harness.formats.atomic import write_text_atomic
from harness.track.names import parse_eval_key

#: complete trials below which no importance plot is drawn
MIN_IMPORTANCE_TRIALS = 20
NAMES = {"ap": "AP", "ap50": "AP50", "ap75": "AP75", "aps": "APs", "apm": "APm", "apl": "APl", "mmr": "mMR",
         "ar1": "AR1", "ar10": "AR10", "ar100": "AR100", "jaccard": "JI", "recall": "recall"}
POST = {"nms": "with NMS", "nms_free": "without NMS"}


def metric_name(key: str) -> str:
    """`eval.nms_free.ap50` -> 'AP50 without NMS'."""
    parsed = parse_eval_key(key)
    if parsed is None:
        return key
    post, name = parsed
    return NAMES.get(name, name) + (f" {POST[post]}" if post else "")


def pct(x: float, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def mean_std(s: dict) -> str:
    """'88.4 ± 0.6 (n = 3)' in percent; no ± with one value."""
    if not s or not s.get("n"):
        return "–"
    std = s.get("std", math.nan)
    spread = f" ± {100 * std:.2f}" if std is not None and math.isfinite(std) else ""
    return f"{pct(s['mean'])}{spread} (n = {s['n']})"


def signed(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.2f}"


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def trial_rows(study) -> list[dict]:
    """Every trial as plain data: number, state, params, per-seed search values, mean, std, n."""
    out = []
    for t in study.trials:
        row = {"number": t.number, "state": t.state.name, "params": dict(t.params),
               "surplus": bool(t.user_attrs.get("surplus"))}
        for i, (attr, suffix) in enumerate((("values", ""), ("values2", "2"))):
            values = {int(k): float(v) for k, v in (t.user_attrs.get(attr) or {}).items()}
            if i and not values:
                continue
            x = list(values.values())
            objective = t.values[i] if t.values is not None and len(t.values) > i else None
            row.update({f"values{suffix}": values, f"std{suffix}": float(np.std(x, ddof=1)) if len(x) > 1 else None,
                        f"mean{suffix}": objective if objective is not None else (float(np.mean(x)) if x else None),
                        f"n{suffix}": len(x)})
        out.append(row)
    return out


def pareto(trials: list[dict], maximize: tuple[bool, bool]) -> list[dict]:
    """The complete trials no other complete trial beats on both objectives (ties: kept)."""
    done = [t for t in trials if t["state"] == "COMPLETE" and t.get("mean2") is not None]
    sign = [1 if m else -1 for m in maximize]

    def beats(a, b):
        x = (sign[0] * a["mean"], sign[1] * a["mean2"])
        y = (sign[0] * b["mean"], sign[1] * b["mean2"])
        return x[0] >= y[0] and x[1] >= y[1] and x != y

    return sorted((t for t in done if not any(beats(o, t) for o in done)), key=lambda t: -sign[0] * t["mean"])


def write_sweep_report(study, sweep, out_dir: Path, confirmation: dict | None = None) -> None:
    """`sweep_<name>.md`, `.json`, `_best.yaml` and the plots in out_dir, from the study's trials
    and the confirmation (`harness.sweep.confirm.analyse`; None: the sweep has no confirmation)."""
    spec = sweep.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    name, metric = spec.name, metric_name(spec.objective.metric)
    maximize = spec.objective.direction == "maximize"
    trials = [t for t in trial_rows(study) if not t["surplus"]]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    ranked = sorted(complete, key=lambda t: (-t["mean"] if maximize else t["mean"], t["number"]))
    states = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    plots = _plots(study, trials, spec, metric, out_dir, len(complete))

    lines = [f"# Sweep: {name}", "",
             f"Row `{spec.row}` of `{spec.experiment}`; objective: {spec.objective.direction} {metric} "
             f"(`{spec.objective.metric}`, percent); {len(trials)} trials ({states['COMPLETE']} complete, "
             f"{states['PRUNED']} pruned, {states['FAIL']} failed).", "", "## Protocol", ""]
    lines += _protocol(sweep)
    keys = list(spec.space)
    lines += ["", "## Search", "",
              f"Each trial's score is its mean {metric} over the search seeds (± the std over seeds, n seeds). "
              "The best of many noisy trials is biased upward; the confirmation below re-scores the top ones.", "",
              "| trial | state | search " + metric + " | " + " | ".join(f"`{k}`" for k in keys) + " |",
              "| :--- | :--- | :---: | " + " | ".join(":---:" for _ in keys) + " |"]
    shown = ranked[:10] + [t for t in trials if t["state"] != "COMPLETE"][:10]
    for t in shown:
        s = {"mean": t["mean"], "std": t["std"] if t["std"] is not None else math.nan, "n": t["n"]}
        score = mean_std(s) if t["state"] == "COMPLETE" else "–"
        lines.append(f"| {t['number']} | {t['state'].lower()} | {score} | "
                     + " | ".join(_value(t["params"].get(k)) for k in keys) + " |")
    best_params, verdict = None, ""
    if spec.secondary is not None:
        second = metric_name(spec.secondary.metric)
        front = pareto(trials, (maximize, spec.secondary.direction == "maximize"))
        lines += ["", "## Pareto front of the search", "",
                  f"The complete trials that no other beats on both {metric} ({spec.objective.direction}) and "
                  f"{second} ({spec.secondary.direction}); the confirmation takes its top {spec.confirm.top_k if spec.confirm else 0} "
                  f"by {metric}.", "",
                  f"| trial | {metric} | {second} | " + " | ".join(f"`{k}`" for k in keys) + " |",
                  "| :--- | :---: | :---: | " + " | ".join(":---:" for _ in keys) + " |"]
        for t in front:
            a = {"mean": t["mean"], "std": t["std"] if t["std"] is not None else math.nan, "n": t["n"]}
            b = {"mean": t["mean2"], "std": t["std2"] if t["std2"] is not None else math.nan, "n": t["n2"]}
            lines.append(f"| {t['number']} | {mean_std(a)} | {mean_std(b)} | "
                         + " | ".join(_value(t["params"].get(k)) for k in keys) + " |")
    if confirmation is not None:
        lines += ["", "## Confirmation", ""] + _confirmation(confirmation, metric, keys)
        pick = confirmation.get("recommended")
        if pick is not None:  # the winner when it beats the defaults, else the defaults
            best_params, verdict = pick["params"], f"{pick['label']}: {confirmation['outcome']}"
    elif ranked:
        best_params = ranked[0]["params"]
        verdict = (f"trial {ranked[0]['number']} has the best search score; not confirmed (the spec declares no "
                   "confirmation split), so its score is biased upward")
        lines += ["", f"**Not confirmed:** {verdict}."]
    if best_params is not None:
        header = f"# sweep {name}: {verdict}\n"
        write_text_atomic(out_dir / f"sweep_{name}_best.yaml", header + yaml.safe_dump(best_params, sort_keys=True))
        what = "the search's best values (not confirmed)" if confirmation is None else (
            "the confirmed winner's values" if confirmation["better"] else
            "the defaults' values (no trial was shown better on the confirmation split)")
        lines += ["", f"Recommended: {what}, in [`sweep_{name}_best.yaml`](sweep_{name}_best.yaml) "
                  "(`harness run SPEC --set-file` takes it)."]
    lines += [""]
    for path, caption in plots:
        lines += ([f"![{path}]({path})", ""] if path else []) + [caption, ""]
    data = {"name": name, "spec": spec.model_dump(mode="json"), "metric": spec.objective.metric,
            "trials": trials, "confirmation": confirmation}
    write_text_atomic(out_dir / f"sweep_{name}.json", json.dumps(data, indent=1, default=_json, allow_nan=True) + "\n")
    write_text_atomic(out_dir / f"sweep_{name}.md", "\n".join(lines).rstrip() + "\n")
    print(f"wrote {out_dir / f'sweep_{name}.md'}")


def _json(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON: {type(x).__name__}")


def _images(r) -> str:
    return "all images of the validation split" if r is None else f"validation images [{r[0]}, {r[1]})"


def _protocol(sweep) -> list[str]:
    spec = sweep.spec
    p = spec.pruner
    pruner = {"median": f"median pruner on the first seed's learning curve (from trial {p.n_startup_trials}, "
                        f"after iteration {p.n_warmup_steps})",
              "racing": f"racing: seeds run one after another, a trial stops once Wilcoxon's signed-rank test of "
                        f"its per-seed differences to the incumbent gives p < {p.p_threshold:g} (after "
                        f"{p.n_startup_steps} seeds)",
              "none": "none"}[p.type]
    out = [f"- Search: seeds {spec.search.seeds}, {_images(spec.search.val_images)}; {spec.n_trials} trials "
           f"(TPE, seed {spec.sampler.seed}, {spec.sampler.n_startup_trials} random first; trial 0 is the "
           f"defaults); pruning: {pruner}."]
    if spec.confirm is None:
        out.append("- Confirmation: none declared.")
    else:
        c = spec.confirm
        table = (" (these images may include the table's: `allow_table_images`)" if c.allow_table_images
                 else ", disjoint from the search split and from the table's images")
        out.append(f"- Confirmation: the top {c.top_k} search trials and the defaults, re-run on fresh seeds "
                   f"{c.seeds} and {_images(c.val_images)}{table}; the winner is chosen there.")
    if spec.overrides:
        out.append("- Every run: " + ", ".join(f"`{k}={v}`" for k, v in spec.overrides.items()) + ".")
    return out


def _confirmation(conf: dict, metric: str, keys: list[str]) -> list[str]:
    lines = [f"Per confirmed trial: the search score, the confirmation score (mean ± std over the confirmation "
             f"seeds, n), the selection gap (search − confirmation) and, against the defaults, the gain on each "
             f"split and the gap of the gain (what the selection added; the image sets' difficulty cancels). "
             f"{metric} in percent, differences in points.", "",
             "| trial | search | confirmation | gap | gain (search) | gain (confirmation) | gap of the gain | "
             + " | ".join(f"`{k}`" for k in keys) + " |",
             "| :--- | :---: | :---: | :---: | :---: | :---: | :---: | " + " | ".join(":---:" for _ in keys) + " |"]
    for r in conf["trials"]:
        label = r["label"] + (" **(winner)**" if r["label"] == conf["winner"] else "")
        lines.append(f"| {label} | {mean_std(r['search'])} | {mean_std(r['confirm'])} | {signed(r['gap'])} | "
                     f"{signed(r.get('gain_search'))} | {signed(r.get('gain_confirm'))} | {signed(r.get('gain_gap'))} | "
                     + " | ".join(_value(r["params"].get(k)) for k in keys) + " |")
    if any("confirm2" in r for r in conf["trials"]):
        lines += ["", "The secondary objective on the confirmation runs: "
                  + "; ".join(f"{r['label']} {mean_std(r['confirm2'])}" for r in conf["trials"] if "confirm2" in r)
                  + "."]
    lines += ["", f"**Outcome: {conf['outcome']}.**", ""]
    if conf["tests"]:
        lines += ["Each confirmed trial against the defaults on the confirmation runs (paired by seed; Holm over "
                  "the comparisons, since the winner is picked on these runs):", ""]
        lines += [f"- {t['line']}" for t in conf["tests"]]
    return lines


def _plots(study, trials: list[dict], spec, metric: str, out_dir: Path, n_complete: int) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    done = [t for t in trials if t["state"] == "COMPLETE"]
    if done:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for t in done:
            vals = [100 * v for v in t["values"].values()] or [100 * t["mean"]]
            ax.scatter([t["number"]] * len(vals), vals, s=12, color="0.6", zorder=2)
            err = 100 * t["std"] if t["std"] is not None else 0.0
            ax.errorbar([t["number"]], [100 * t["mean"]], yerr=[err], fmt="o", color="C0", capsize=3, zorder=3)
        means = [100 * t["mean"] for t in done]
        best = np.maximum.accumulate(means) if spec.objective.direction == "maximize" else np.minimum.accumulate(means)
        ax.step([t["number"] for t in done], best, where="post", color="C1", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{metric} (%)")
        ax.legend(loc="lower right", fontsize=8)
        path = f"sweep_{spec.name}_history.png"
        fig.savefig(out_dir / path, dpi=80, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        out.append((path, f"Search: {metric} per trial (grey: each search seed; blue: mean ± std over seeds; "
                          "orange: the best mean so far)."))
    if spec.secondary is not None and any(t.get("mean2") is not None for t in done):
        second = metric_name(spec.secondary.metric)
        front = {t["number"] for t in pareto(trials, (spec.objective.direction == "maximize",
                                                      spec.secondary.direction == "maximize"))}
        fig, ax = plt.subplots(figsize=(5.2, 4.0))
        for t in done:
            on = t["number"] in front
            ax.scatter([100 * t["mean"]], [100 * t["mean2"]], color="C3" if on else "0.6", s=24 if on else 12, zorder=3)
            ax.annotate(str(t["number"]), (100 * t["mean"], 100 * t["mean2"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel(f"{metric} (%)")
        ax.set_ylabel(f"{second} (%)")
        path = f"sweep_{spec.name}_pareto.png"
        fig.savefig(out_dir / path, dpi=80, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        out.append((path, f"Search: each complete trial's mean {metric} against its mean {second} (the trial's "
                          "number beside it); red: the Pareto front."))
    if n_complete >= MIN_IMPORTANCE_TRIALS:
        try:
            from optuna.visualization import matplotlib as ovm

            ax = ovm.plot_param_importances(study)
            ax.set_xlabel(f"importance for {metric}")
            path = f"sweep_{spec.name}_importances.png"
            ax.figure.savefig(out_dir / path, dpi=80, bbox_inches="tight", metadata={"Software": None})
            plt.close(ax.figure)
            out.append((path, "Parameter importances (Optuna's fANOVA on the complete trials' search means)."))
        except Exception as exc:  # noqa: BLE001 - a plot never fails the report
            print(f"importance plot skipped: {exc}")
    else:
        out.append(("", f"No parameter-importance plot: {n_complete} complete trials, and an importance fit "
                        f"needs at least {MIN_IMPORTANCE_TRIALS} to rank parameters by more than noise."))
    return out


__all__ = ["MIN_IMPORTANCE_TRIALS", "metric_name", "write_sweep_report"]
