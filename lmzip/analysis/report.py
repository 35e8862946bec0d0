"""Correlation reports: markdown, JSON and CSV tables, and publication-quality scatter plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .correlate import Fit

COLUMNS = ["group", "benchmark", "n", "pearson_r", "spearman_rho", "kendall_tau", "slope", "intercept", "rmse",
           "r_ci_low", "r_ci_high", "slope_ci_low", "slope_ci_high", "loo_rmse"]


def rows(groups: dict[str, list[Fit]]) -> list[dict]:
    out = []
    for group, fits in groups.items():
        for f in fits:
            out.append({"group": group, "benchmark": f.benchmark, "n": f.n, "pearson_r": f.pearson_r,
                        "spearman_rho": f.spearman_rho, "kendall_tau": f.kendall_tau, "slope": f.slope,
                        "intercept": f.intercept, "rmse": f.rmse, "r_ci_low": f.r_ci[0], "r_ci_high": f.r_ci[1],
                        "slope_ci_low": f.slope_ci[0], "slope_ci_high": f.slope_ci[1], "loo_rmse": f.loo_rmse})
    return out


def to_csv(groups: dict[str, list[Fit]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows(groups):
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def to_json(groups: dict[str, list[Fit]], notes: dict | None = None) -> str:
    return json.dumps({"notes": notes or {}, "fits": rows(groups),
                       "data": {g: [{"benchmark": f.benchmark, "models": f.models, "bpc": f.x, "score": f.y}
                                    for f in fits] for g, fits in groups.items()}}, indent=2)


def to_markdown(groups: dict[str, list[Fit]], title: str, notes: list[str] = ()) -> str:
    lines = [f"# {title}", ""] + [f"{n}" for n in notes] + ([""] if notes else [])
    lines += ["Scores as fractions. r: Pearson; rho: Spearman; tau: Kendall; RMSE of the fit's residuals; "
              "95% bootstrap intervals (2000 resamples of models); LOO: RMSE of leave-one-out predictions.", ""]
    for group, fits in groups.items():
        lines += [f"## {group}", "", "| benchmark | n | r | r 95% CI | rho | tau | slope | slope 95% CI | intercept "
                  "| RMSE | LOO RMSE |", "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|"]
        for f in fits:
            lines.append(f"| {f.benchmark} | {f.n} | {f.pearson_r:.3f} | [{f.r_ci[0]:.3f}, {f.r_ci[1]:.3f}] | "
                         f"{f.spearman_rho:.3f} | {f.kendall_tau:.3f} | {f.slope:.3f} | "
                         f"[{f.slope_ci[0]:.3f}, {f.slope_ci[1]:.3f}] | {f.intercept:.3f} | {f.rmse:.3f} | "
                         f"{f.loo_rmse:.3f} |")
        lines.append("")
    return "\n".join(lines)


def scatter(f: Fit, path: Path, title: str, xlabel: str = "BPC",
            excluded: dict[str, tuple[float, float]] | None = None) -> Path:
    """Score against BPC with the fitted line, r and RMSE in the title, every model labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=150)
    ax.scatter(f.x, [100 * v for v in f.y], s=28, color="#1f5fa8", zorder=3)
    for name, x, y in zip(f.models, f.x, f.y):
        ax.annotate(name, (x, 100 * y), xytext=(4, 3), textcoords="offset points", fontsize=6.5, color="#333333")
    for name, (x, y) in (excluded or {}).items():
        ax.scatter([x], [100 * y], s=28, facecolors="none", edgecolors="#c0392b", zorder=3)
        ax.annotate(f"{name} (excluded)", (x, 100 * y), xytext=(4, 3), textcoords="offset points", fontsize=6.5,
                    color="#c0392b")
    lo, hi = min(f.x), max(f.x)
    pad = 0.05 * (hi - lo)
    xs = [lo - pad, hi + pad]
    ax.plot(xs, [100 * (f.intercept + f.slope * x) for x in xs], color="#e67e22", lw=1.6, zorder=2)
    ax.set_title(f"{title}\nPearson r = {f.pearson_r:.3f}, RMSE = {100 * f.rmse:.1f}% (n = {f.n})", fontsize=10)
    ax.set_xlabel(f"{xlabel} (lower is better compression)")
    ax.set_ylabel(f"{f.benchmark} score (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
