"""Compression against intelligence: BPC beside benchmark scores, fitted and tested.

Reproduces the analysis of Huang et al. (2024), "Compression Represents Intelligence Linearly":
per benchmark and per area average, Pearson r between BPC and score, the least-squares line,
and the RMSE of its residuals with scores as fractions (the paper's convention). It adds rank
correlations, bootstrap confidence intervals, leave-one-out prediction error, and prediction
intervals for a new model's score from its BPC.

The paper's own tables (arXiv v2) ship as package data (``lmzip/paper/``) so that
``lmzip correlate --paper`` reproduces its published figures after a plain install.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from importlib import resources

import numpy as np
from scipy import stats

from ..errors import LmzipError

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


class AnalysisError(LmzipError):
    """The tables cannot be analysed as given (too few models, constant or missing values...)."""

    exit_code = 1


@dataclass
class Fit:
    """The linear fit of score (fraction) on BPC over ``n`` models, with its uncertainty."""

    benchmark: str
    n: int
    pearson_r: float
    spearman_rho: float
    kendall_tau: float
    slope: float
    intercept: float
    rmse: float  # of the residuals, sqrt(mean(residual^2)), scores as fractions
    r_ci: tuple[float, float]
    slope_ci: tuple[float, float]
    loo_rmse: float  # RMSE of each model's score predicted by a line fitted without it
    models: list[str] = field(default_factory=list, repr=False)
    x: list[float] = field(default_factory=list, repr=False)
    y: list[float] = field(default_factory=list, repr=False)

    def predict(self, bpc: float, level: float = 0.95) -> tuple[float, float, float]:
        """Score (fraction) predicted for a model of this BPC, with a ``level`` prediction interval."""
        x, y = np.asarray(self.x), np.asarray(self.y)
        n = len(x)
        resid = y - (self.intercept + self.slope * x)
        s = math.sqrt(float(resid @ resid) / (n - 2))
        sxx = float(((x - x.mean()) ** 2).sum())
        half = stats.t.ppf(0.5 + level / 2, n - 2) * s * math.sqrt(1 + 1 / n + (bpc - x.mean()) ** 2 / sxx)
        mid = self.intercept + self.slope * bpc
        return mid, mid - half, mid + half

    def summary(self) -> dict:
        out = asdict(self)
        for key in ("models", "x", "y"):
            out.pop(key)
        return out


def _check(models: list[str], x: np.ndarray, y: np.ndarray, what: str) -> None:
    if len(set(models)) != len(models):
        dup = sorted({m for m in models if models.count(m) > 1})
        raise AnalysisError(f"{what}: duplicate model names: {', '.join(dup)}")
    bad = [m for m, a, b in zip(models, x, y) if not (math.isfinite(a) and math.isfinite(b))]
    if bad:
        raise AnalysisError(f"{what}: missing or non-numeric values for: {', '.join(bad)}")
    if len(x) < 3:
        raise AnalysisError(f"{what}: needs at least 3 models, got {len(x)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise AnalysisError(f"{what}: {'BPC' if np.ptp(x) == 0 else 'score'} is constant; no correlation exists")


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def _bootstrap(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and slope over resamples of the models (fixed seed); resamples with no spread are dropped."""
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(x), (BOOTSTRAP_SAMPLES, len(x)))
    xs, ys = x[idx], y[idx]
    dx, dy = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
    sxx, syy, sxy = (dx * dx).sum(1), (dy * dy).sum(1), (dx * dy).sum(1)
    ok = (sxx > 1e-300) & (syy > 1e-300)
    return sxy[ok] / np.sqrt(sxx[ok] * syy[ok]), sxy[ok] / sxx[ok]


def fit(models: list[str], bpc: list[float], score: list[float], benchmark: str = "score") -> Fit:
    """Fit ``score`` (a fraction in [0, 1]) against ``bpc`` across models."""
    x, y = np.asarray(bpc, dtype=float), np.asarray(score, dtype=float)
    _check(list(models), x, y, benchmark)
    slope, intercept = _line(x, y)
    rmse = math.sqrt(float(np.mean((y - (intercept + slope * x)) ** 2)))
    rs, slopes = _bootstrap(x, y)
    loo = []
    for k in range(len(x)):
        keep = np.arange(len(x)) != k
        s, c = _line(x[keep], y[keep])
        loo.append(y[k] - (c + s * x[k]))
    return Fit(
        benchmark=benchmark, n=len(x), pearson_r=float(stats.pearsonr(x, y)[0]),
        spearman_rho=float(stats.spearmanr(x, y)[0]), kendall_tau=float(stats.kendalltau(x, y)[0]),
        slope=slope, intercept=intercept, rmse=rmse,
        r_ci=tuple(float(v) for v in np.percentile(rs, [2.5, 97.5])),
        slope_ci=tuple(float(v) for v in np.percentile(slopes, [2.5, 97.5])),
        loo_rmse=math.sqrt(float(np.mean(np.square(loo)))),
        models=list(models), x=x.tolist(), y=y.tolist(),
    )


# --- tables --------------------------------------------------------------------------------


def read_table(text: str) -> list[dict]:
    """Rows of a CSV, keys stripped."""
    return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def join(bpc_rows: list[dict], score_rows: list[dict], bpc_column: str, model_column: str = "model") -> list[dict]:
    """Score rows with their model's BPC added as ``bpc``; every name must match exactly once."""
    bpc = {}
    for row in bpc_rows:
        name = row.get(model_column)
        if name is None:
            raise AnalysisError(f"BPC table has no '{model_column}' column")
        if name in bpc:
            raise AnalysisError(f"BPC table: duplicate model names: {name}")
        if bpc_column not in row:
            raise AnalysisError(f"BPC table has no '{bpc_column}' column (has: {', '.join(row)})")
        bpc[name] = _number(row[bpc_column])
    names = [r.get(model_column) for r in score_rows]
    missing = [n for n in names if n not in bpc]
    if missing:
        raise AnalysisError(f"no BPC for models in the scores table: {', '.join(missing)}"
                            f" (BPC table has: {', '.join(sorted(bpc))})")
    return [{**r, "bpc": bpc[r[model_column]]} for r in score_rows]


def analyse(rows: list[dict], benchmarks: list[str], bpc_column: str = "bpc", exclude: set[str] = frozenset(),
            percent: bool = True, model_column: str = "model") -> list[Fit]:
    """One fit per benchmark column, over the rows whose model is not excluded."""
    kept = [r for r in rows if r[model_column] not in exclude]
    unknown = set(exclude) - {r[model_column] for r in rows}
    if unknown:
        raise AnalysisError(f"cannot exclude unknown models: {', '.join(sorted(unknown))}")
    scale = 100.0 if percent else 1.0
    models = [r[model_column] for r in kept]
    x = [_number(str(r[bpc_column])) for r in kept]
    return [fit(models, x, [_number(str(row[b])) / scale for row in kept], b) for b in benchmarks]


# --- the paper's data ------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperArea:
    name: str  # as in correlations_reported.csv
    file: str
    bpc_column: str
    benchmarks: dict[str, str]  # column -> name as the paper prints it
    corpus: str


PAPER_AREAS = (
    PaperArea("Knowledge & Commonsense", "knowledge_commonsense_table4_v2.csv", "BPC_CommonCrawl",
              {"HellaSwag": "HellaSwag", "ARC_Challenge": "ARC-Challenge", "NaturalQuestions": "NaturalQuestions",
               "TriviaQA": "TriviaQA", "MMLU_cloze": "MMLU (cloze style)", "Average": "Average"}, "Common Crawl"),
    PaperArea("Coding", "coding_table6_v2.csv", "BPC_Python",
              {"HumanEval_pass1": "HumanEval", "MBPP_pass1": "MBPP", "DS1000_pass1": "DS-1000", "Average": "Average"},
              "Python"),
    PaperArea("Mathematical Reasoning", "math_table8_v2.csv", "BPC_ArXiv_Math",
              {"GSM8K": "GSM8K", "MATH": "MATH", "SAT_Math": "SAT-Math", "MMLU_Math": "MMLU-Math", "Average": "Average"},
              "ArXiv-Math"),
)


def paper_table(file: str) -> list[dict]:
    """One of the paper's tables, from the package data."""
    return read_table(resources.files("lmzip.paper").joinpath(file).read_text())


def paper_excluded(rows: list[dict]) -> set[str]:
    """Models the paper left out of a fit (the three Qwen models in math, for contamination)."""
    return {r["model"] for r in rows if r.get("excluded_from_fit_as_outlier", "no").startswith("yes")}


def paper_fits() -> dict[str, list[Fit]]:
    """Every area's per-benchmark and average fits, as the paper computed them."""
    out = {}
    for area in PAPER_AREAS:
        rows = paper_table(area.file)
        fits = analyse(rows, list(area.benchmarks), area.bpc_column, paper_excluded(rows))
        for f in fits:
            f.benchmark = area.benchmarks[f.benchmark]
        out[area.name] = fits
    return out


def paper_overall() -> Fit:
    """The paper's Figure 1 headline (r = -0.931, RMSE 0.031).

    It is reproduced by the 19 general-purpose models found in all three areas' tables, the
    Qwen models included, with x the mean of the three BPCs and y the mean of the three *area
    averages* (not of the 12 benchmark scores). ``paper_overall_variants`` shows the others.
    """
    return paper_overall_variants()["3 area averages, all general models"]


def paper_overall_variants() -> dict[str, Fit]:
    """The overall fit under each plausible reading of the paper's averaging, side by side."""
    tables = {a.name: {r["model"]: r for r in paper_table(a.file)} for a in PAPER_AREAS}
    general = [m for m in tables[PAPER_AREAS[0].name]
               if all(m in t and t[m].get("model_type", "general") == "general" for t in tables.values())]
    qwen_math = paper_excluded(paper_table(PAPER_AREAS[2].file))
    variants = {}
    for label, members in (("all general models", general),
                           ("general models without math-excluded Qwen", [m for m in general if m not in qwen_math])):
        bpc = [np.mean([_number(tables[a.name][m][a.bpc_column]) for a in PAPER_AREAS]) for m in members]
        per_bench = [np.mean([_number(tables[a.name][m][c]) for a in PAPER_AREAS for c in a.benchmarks
                              if c != "Average"]) / 100 for m in members]
        per_area = [np.mean([_number(tables[a.name][m]["Average"]) for a in PAPER_AREAS]) / 100 for m in members]
        variants[f"12 benchmarks, {label}"] = fit(members, bpc, per_bench, "Average of 12 benchmarks")
        variants[f"3 area averages, {label}"] = fit(members, bpc, per_area, "Average of 3 area averages")
    return variants


def paper_reported() -> list[dict]:
    """The correlations the paper prints (Tables 5, 7, 9 and Figure 1), from the package data."""
    return paper_table("correlations_reported.csv")


# --- whole analyses, as the command line runs them --------------------------------------------


@dataclass
class Analysis:
    """Fits grouped by area, with the plots' data and notes for the report."""

    groups: dict[str, list[Fit]]
    notes: list[str]
    excluded: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # group -> model -> (x, y)
    corpus: dict[str, str] = field(default_factory=dict)  # group -> BPC corpus name for axis labels


def paper_analysis() -> Analysis:
    """The paper's three areas and its overall figure, with the printed values beside ours."""
    groups = paper_fits()
    overall = paper_overall()
    groups["Overall"] = [overall]
    reported = {(r["area"], r["benchmark_or_aggregate"]): r for r in paper_reported() if r["paper_version"] == "v2"}
    notes = ["Data: the tables of Huang et al. (2024), arXiv v2, shipped as lmzip/paper/. Math fits exclude the "
             "three Qwen models, as the paper does (contamination).", "",
             "Overall: the paper's r = -0.931 and RMSE 0.031 are reproduced by the mean of the three *area "
             "averages* over the 19 general-purpose models in all three tables (Qwen included), against the mean "
             "of their three BPCs. Other readings of 'average' give:", ""]
    for label, f in paper_overall_variants().items():
        notes.append(f"- {label}: n = {f.n}, r = {f.pearson_r:.3f}, RMSE = {f.rmse:.3f}")
    notes += ["", "| area | benchmark | r (lmzip) | r (paper) | RMSE (lmzip) | RMSE (paper) |",
              "|---|---|---:|---:|---:|---:|"]
    for group, fits in groups.items():
        for f in fits:
            key = (group, "Average of 12 benchmarks" if group == "Overall" else f.benchmark)
            if key in reported:
                r = reported[key]
                notes.append(f"| {group} | {f.benchmark} | {f.pearson_r:.3f} | {r['pearson_r']} | {f.rmse:.3f} | "
                             f"{r['rmse']} |")
    excluded = {}
    for area in PAPER_AREAS:
        rows = paper_table(area.file)
        out = paper_excluded(rows)
        excluded[area.name] = {r["model"]: (_number(r[area.bpc_column]), _number(r["Average"]) / 100)
                               for r in rows if r["model"] in out}
    corpus = {a.name: f"BPC on {a.corpus}" for a in PAPER_AREAS} | {"Overall": "Average BPC"}
    return Analysis(groups, notes, excluded, corpus)


def table_analysis(bpc_text: str, scores_text: str, areas: dict[str, list[str]] | None = None,
                   exclude: set[str] = frozenset(), bpc_column: str = "bpc") -> Analysis:
    """Join a BPC table (model, bpc[, area]) with a scores table (model, one column per benchmark).

    ``areas`` maps an area name to its benchmark columns; where the BPC table has an ``area``
    column, each area takes the BPC measured on that area's corpus. Without ``areas``, every
    numeric column of the scores table forms one group. Each group with several benchmarks also
    gets the fit of their mean, ``Average``. Scores may be percentages or fractions (any value
    above 1.5 means percentages); fits and RMSE are reported as fractions.
    """
    bpc_rows, score_rows = read_table(bpc_text), read_table(scores_text)
    if not score_rows:
        raise AnalysisError("the scores table is empty")
    if not areas:
        columns = [c for c in score_rows[0] if c != "model" and all(math.isfinite(_number(r[c])) for r in score_rows)]
        if not columns:
            raise AnalysisError("the scores table has no numeric benchmark columns")
        areas = {"all": columns}
    groups = {}
    for name, columns in areas.items():
        missing = [c for c in columns if c not in score_rows[0]]
        if missing:
            raise AnalysisError(f"scores table has no column {', '.join(missing)}")
        rows = bpc_rows
        if bpc_rows and "area" in bpc_rows[0]:
            rows = [r for r in bpc_rows if r["area"] == name]
            if not rows:
                raise AnalysisError(f"BPC table has no rows for area '{name}'")
        joined = join(rows, score_rows, bpc_column)
        if len(columns) > 1:
            for r in joined:
                r["Average"] = str(np.mean([_number(r[c]) for c in columns]))
            columns = [*columns, "Average"]
        percent = any(_number(r[c]) > 1.5 for r in joined for c in columns)  # else already fractions
        groups[name] = analyse(joined, columns, "bpc", set(exclude), percent=percent)
    return Analysis(groups, [f"Excluded from the fits: {', '.join(sorted(exclude))}."] if exclude else [])
