"""The correlation analysis: the paper's published figures, scipy on synthetic data, degenerate input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from lmzip.analysis import correlate
from lmzip.cli import main

PAPER_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper"
TABLES = {"Knowledge & Commonsense": "Table 5", "Coding": "Table 7", "Mathematical Reasoning": "Table 9"}


def reported_rows():
    return [r for r in correlate.paper_reported() if r["paper_version"] == "v2" and r["area"] in TABLES]


@pytest.mark.skipif(not PAPER_DIR.is_dir(), reason="shared/reference/paper not present")
@pytest.mark.parametrize("name", sorted(p.name for p in PAPER_DIR.glob("*.csv")) if PAPER_DIR.is_dir() else [])
def test_package_data_is_the_published_tables(name):
    shipped = correlate.paper_table(name)
    with open(PAPER_DIR / name, newline="") as f:
        published = [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]
    assert shipped == published


@pytest.mark.parametrize("row", reported_rows(), ids=lambda r: f"{r['area']}-{r['benchmark_or_aggregate']}")
def test_reproduces_every_table_row(row):
    fits = {f.benchmark: f for f in correlate.paper_fits()[row["area"]]}
    f = fits[row["benchmark_or_aggregate"]]
    assert abs(f.pearson_r - float(row["pearson_r"])) <= 0.005
    assert abs(f.rmse - float(row["rmse"])) <= 0.002


def test_reproduces_the_overall_figure():
    row = next(r for r in correlate.paper_reported() if r["paper_version"] == "v2" and r["area"] == "Overall")
    f = correlate.paper_overall()
    assert abs(f.pearson_r - float(row["pearson_r"])) <= 0.005
    assert abs(f.rmse - float(row["rmse"])) <= 0.002
    assert f.n == 19


def test_math_fit_drops_the_three_qwen_models():
    f = next(f for f in correlate.paper_fits()["Mathematical Reasoning"] if f.benchmark == "Average")
    assert f.n == 19 and not any(m.startswith("Qwen") for m in f.models)


def test_statistics_match_scipy_on_synthetic_data():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.4, 0.7, 25)
    y = 1.5 - 1.8 * x + rng.normal(0, 0.02, 25)
    f = correlate.fit([f"m{i}" for i in range(25)], x, y)
    lin = stats.linregress(x, y)
    assert f.pearson_r == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert f.spearman_rho == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert f.kendall_tau == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
    assert f.slope == pytest.approx(lin.slope, rel=1e-9) and f.intercept == pytest.approx(lin.intercept, rel=1e-9)
    assert f.rmse == pytest.approx(np.sqrt(np.mean((y - lin.intercept - lin.slope * x) ** 2)), rel=1e-9)
    assert f.r_ci[0] < f.pearson_r < f.r_ci[1] and f.slope_ci[0] < f.slope < f.slope_ci[1]
    assert f.loo_rmse > f.rmse  # held-out error exceeds in-sample error


def test_prediction_interval_against_statsmodels_formula():
    x = np.array([0.5, 0.55, 0.6, 0.62, 0.7])
    y = np.array([0.62, 0.58, 0.50, 0.49, 0.40])
    f = correlate.fit(list("abcde"), x, y)
    mid, lo, hi = f.predict(0.58)
    n, lin = len(x), stats.linregress(x, y)
    s = np.sqrt(np.sum((y - lin.intercept - lin.slope * x) ** 2) / (n - 2))
    half = stats.t.ppf(0.975, n - 2) * s * np.sqrt(1 + 1 / n + (0.58 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    assert mid == pytest.approx(lin.intercept + lin.slope * 0.58)
    assert (lo, hi) == pytest.approx((mid - half, mid + half))


@pytest.mark.parametrize("models,x,y,message", [
    (["a", "b"], [0.5, 0.6], [0.4, 0.3], "at least 3"),
    (["a", "b", "c"], [0.5, 0.5, 0.5], [0.4, 0.3, 0.2], "BPC is constant"),
    (["a", "b", "c"], [0.5, 0.6, 0.7], [0.3, 0.3, 0.3], "score is constant"),
    (["a", "b", "c"], [0.5, float("nan"), 0.7], [0.4, 0.3, 0.2], "missing"),
    (["a", "a", "c"], [0.5, 0.6, 0.7], [0.4, 0.3, 0.2], "duplicate"),
])
def test_degenerate_input_gives_a_clear_error(models, x, y, message):
    with pytest.raises(correlate.AnalysisError, match=message):
        correlate.fit(models, x, y)


def test_join_names_unmatched_models():
    with pytest.raises(correlate.AnalysisError, match="no BPC for models.*Zeta"):
        correlate.join([{"model": "A", "bpc": "0.5"}], [{"model": "A"}, {"model": "Zeta"}], "bpc")


def test_cli_tables_with_areas_exclude_and_predict(tmp_path):
    bpc = tmp_path / "bpc.csv"
    scores = tmp_path / "scores.csv"
    rng = np.random.default_rng(0)
    names = [f"model-{i}" for i in range(8)]
    xs = {"prose": rng.uniform(0.5, 0.7, 8), "code": rng.uniform(0.2, 0.4, 8)}
    bpc.write_text("model,area,bpc\n" + "".join(f"{m},{a},{xs[a][i]:.4f}\n" for a in xs for i, m in enumerate(names)))
    scores.write_text("model,qa,cloze,humaneval\n" + "".join(
        f"{m},{80 - 60 * xs['prose'][i] + rng.normal():.2f},{70 - 50 * xs['prose'][i]:.2f},"
        f"{60 - 100 * xs['code'][i] + rng.normal():.2f}\n" for i, m in enumerate(names)))
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["correlate", str(bpc), str(scores), "--area", "prose=qa,cloze",
                                       "--area", "code=humaneval", "--exclude", "model-3", "--predict", "0.6",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.json", "report.csv", "prose.png", "code.png"}
    rows = list(csv.DictReader(open(out / "report.csv")))
    cloze = next(r for r in rows if r["benchmark"] == "cloze")
    assert int(cloze["n"]) == 7 and float(cloze["pearson_r"]) == pytest.approx(-1.0, abs=1e-3)
    assert "Predicted scores at BPC 0.6" in result.output


def test_cli_usage_errors(tmp_path):
    result = CliRunner().invoke(main, ["correlate"])
    assert result.exit_code == 2
    bpc = tmp_path / "b.csv"
    bpc.write_text("model,bpc\na,0.5\nb,0.6\n")
    scores = tmp_path / "s.csv"
    scores.write_text("model,x\na,50\nb,40\n")
    result = CliRunner().invoke(main, ["correlate", str(bpc), str(scores), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "at least 3" in result.output
