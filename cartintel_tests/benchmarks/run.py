"""Benchmarks (not tests) → BENCHMARKS.md: simulator and ingestion throughput at 1M sessions;
feature, training and scoring throughput of the abandonment model at 100k and 1M sessions, the
uplift learners and the plan on the same warehouses; the UCI and Hillstrom real-data floors.

Run with `make bench`. Absolute times on a shared 2-core machine are indicative only.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets import settings
from cartintel_assets.contracts.schema import EVENTS, TABLES
from cartintel_assets.features.labels import RETURN_WINDOW_DAYS, cart_labels
from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    CutoffPolicy,
    day_features,
)
from cartintel_assets.ingestion.ingest import ingest_partition
from cartintel_assets.models.abandonment import (
    XGBParams,
    fit_boosted_model,
    risk_metrics,
    time_split,
)
from cartintel_assets.models.scoring import score_carts
from cartintel_assets.quality.checks import ingest_and_validate
from cartintel_assets.simulation.storefront import StorefrontConfig, simulate, write_storefront
from cartintel_tests.benchmarks.scale import SECTION, split_section
from cartintel_tests.benchmarks.serving import serving_stage


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def _config(sessions: int, days: int) -> StorefrontConfig:
    return StorefrontConfig(
        days=days,
        sessions_per_day=sessions // days,
        n_customers=max(6000, sessions // 5),
        n_products=5000,
    )


def run(sessions: int, days: int) -> tuple[list[str], list[str], list[str]]:
    """Simulate, land and ingest; then the model stages and the service on the same warehouse."""
    cfg = _config(sessions, days)
    print(f"simulating {sessions:,} sessions over {days} days", flush=True)
    t0 = time.perf_counter()
    store = simulate(cfg, lambda m: print(f"  {time.perf_counter() - t0:6.1f}s {m}", flush=True))
    t_sim = time.perf_counter() - t0
    n_sessions = len(store.truth_sessions)
    n_events = sum(store.event_lines(day) for day in store.landing)
    last_events = store.event_lines(cfg.day(days - 1).isoformat())
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_storefront(store, tmp)
        t_write = time.perf_counter() - t1
        del store
        con = duckdb.connect(str(Path(tmp) / "wh.duckdb"))
        t2 = time.perf_counter()
        t_events = 0.0
        for i in range(days):
            for spec in TABLES:
                ts = time.perf_counter()
                ingest_partition(con, spec, cfg.day(i), Path(tmp) / "landing", "bench")
                if spec.name == "events":
                    t_events += time.perf_counter() - ts
            print(f"  ingested day {i + 1}/{days} ({time.perf_counter() - t2:6.1f}s)", flush=True)
        t_ingest = time.perf_counter() - t2
        # the asset's whole step on the last day's events, beside ingestion alone (same run)
        last, landing = cfg.day(days - 1), Path(tmp) / "landing"
        t3 = time.perf_counter()
        ingest_partition(con, EVENTS, last, landing, "bench")
        t_plain = time.perf_counter() - t3
        t4 = time.perf_counter()
        ingest_and_validate(con, EVENTS, last, landing, "bench", 1.0)
        t_checked = time.perf_counter() - t4
        model_rows, risk, uplift, features = model_stages(con, cfg, n_sessions)
        con.close()  # the service reads the warehouse from its own processes
        serving_rows = serving_stage(
            Path(tmp) / "wh.duckdb",
            Path(tmp) / "landing",
            cfg.day(days - 1).isoformat(),
            risk,
            uplift,
            features,
            n_sessions // 1000,
        )
    return (
        [
            f"| simulate {n_sessions:,} sessions ({n_events:,} events, in memory) | {t_sim:.1f} s | {n_events / t_sim:,.0f} events/s |",
            f"| write landing files (JSONL + Parquet) | {t_write:.1f} s | {n_events / t_write:,.0f} events/s |",
            f"| **simulate + land, end to end** (target < 120 s) | **{t_sim + t_write:.1f} s** | {n_events / (t_sim + t_write):,.0f} events/s |",
            f"| ingest all 7 tables, {days} daily partitions (validate, quarantine, write DuckDB) | {t_ingest:.1f} s | {n_events / t_ingest:,.0f} events/s overall |",
            f"| of which `events` | {t_events:.1f} s | {n_events / t_events:,.0f} events/s |",
            f"| `events` of the last day, ingestion alone | {t_plain:.1f} s | {last_events / t_plain:,.0f} events/s |",
            f"| `events` of the last day, the asset's whole step (ingestion, GX over every landed line, reconciliation with the file, GX-quarantine agreement) | {t_checked:.1f} s | {last_events / t_checked:,.0f} events/s ({t_checked / t_plain:.1f}x ingestion alone) |",
            f"| peak resident memory of the benchmark process | {_peak_rss_gib():.1f} GiB | |",
        ],
        model_rows,
        serving_rows,
    )


def model_stages(
    con: duckdb.DuckDBPyConnection, cfg: StorefrontConfig, n_sessions: int
) -> tuple[list[str], Any, Any, pd.DataFrame]:
    """Point-in-time features and labels per day, training on the labelled days, batch scoring."""
    say = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    t0 = time.perf_counter()
    frames = []
    for i in range(cfg.days):
        frames.append(day_features(con, cfg.day(i), CutoffPolicy()))
        say(f"features day {i + 1}/{cfg.days} ({time.perf_counter() - t0:6.1f}s)")
    t_feat = time.perf_counter() - t0
    features = pd.concat(frames, ignore_index=True)
    t1 = time.perf_counter()
    labels = pd.concat(
        [cart_labels(con, cfg.day(i)) for i in range(cfg.days - RETURN_WINDOW_DAYS)],
        ignore_index=True,
    )
    t_lab = time.perf_counter() - t1
    data = features.merge(labels[["session_id", "harmful"]], on="session_id")
    split = time_split(data["started_at"])
    parts = {s: data[split == s] for s in ("train", "valid", "test")}
    say(f"training on {len(parts['train']):,} carts (validation {len(parts['valid']):,})")
    t2 = time.perf_counter()
    model = fit_boosted_model(
        parts["train"],
        parts["train"]["harmful"].to_numpy(dtype=int),
        parts["valid"],
        parts["valid"]["harmful"].to_numpy(dtype=int),
        list(NUMERIC_FEATURES),
        list(CATEGORICAL_FEATURES),
        XGBParams(),
    )
    t_train = time.perf_counter() - t2
    auc = risk_metrics(
        parts["test"]["harmful"].to_numpy(dtype=int), model.predict_proba(parts["test"])
    )["roc_auc"]
    t3 = time.perf_counter()
    model.predict_proba(features)
    t_pred = time.perf_counter() - t3
    # one call, as the asset makes it (deciles are per batch)
    print(f"  batch scores with SHAP reason codes of {len(features):,} carts", flush=True)
    t4 = time.perf_counter()
    score_carts(model, features)
    t_score = time.perf_counter() - t4
    n, k = len(features), n_sessions // 1000
    drift = drift_stages(
        parts["train"], parts["test"], model.predict_proba(parts["test"]), features, model, k
    )
    uplift, uplift_model = uplift_stages(con, features, k)
    return (
        [
            f"| {k:,}k | point-in-time features, {cfg.days} days | {n:,} carts | {t_feat:.1f} s | {n / t_feat:,.0f} carts/s |",
            f"| {k:,}k | harmful/benign labels, {cfg.days - RETURN_WINDOW_DAYS} days | {len(labels):,} carts | {t_lab:.1f} s | {len(labels) / t_lab:,.0f} carts/s |",
            f"| {k:,}k | **train** (early stopping at {model.best_iteration + 1} rounds, isotonic calibration; test ROC-AUC {auc:.3f}) | {len(parts['train']):,} train + {len(parts['valid']):,} valid | **{t_train:.1f} s** | {(len(parts['train']) + len(parts['valid'])) / t_train:,.0f} rows/s |",
            f"| {k:,}k | risk only (`predict_proba`) | {n:,} carts | {t_pred:.2f} s | {n / t_pred:,.0f} rows/s |",
            f"| {k:,}k | **batch scores** (risk + decile + 3 SHAP reason codes, `score_carts`) | {n:,} carts | **{t_score:.2f} s** | **{n / t_score:,.0f} rows/s** |",
            *drift,
            *uplift,
        ],
        model,
        uplift_model,
        features,
    )


DRIFT_ROWS = 100_000


def drift_stages(
    train: pd.DataFrame,
    test: pd.DataFrame,
    test_risk: np.ndarray,
    features: pd.DataFrame,
    model: object,
    k: int,
) -> list[str]:
    """One version's reference built once (as at registration), then one partition of 100k carts
    checked against it: the work of `abandonment_drift`, and the same check against the whole
    training window instead of the cached reference sample, side by side."""
    from cartintel_assets.monitoring.drift import (
        DriftOptions,
        column_drift,
        reference_sample,
        render_reports,
        unstable_features,
        version_drift,
    )

    say = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    options = DriftOptions()
    t0 = time.perf_counter()
    reference = reference_sample(test, test_risk)
    unstable = list(unstable_features(train, test, options))
    t_ref = time.perf_counter() - t0
    current = features.sample(DRIFT_ROWS, replace=len(features) < DRIFT_ROWS, random_state=1)
    current = current.assign(risk=model.predict_proba(current), segment="unsegmented")  # type: ignore[attr-defined]
    segment_of = pd.DataFrame({"customer_id": [], "segment": []})
    say(f"drift: reference {len(reference):,} rows, {len(current):,} current rows")
    t1 = time.perf_counter()
    drift = version_drift(reference, current, segment_of, unstable, options)
    t_judged = time.perf_counter() - t1
    with tempfile.TemporaryDirectory() as tmp:
        t2 = time.perf_counter()
        render_reports(drift, options, Path(tmp), "day")
        t_render = time.perf_counter() - t2
    whole = train.assign(risk=model.predict_proba(train))  # type: ignore[attr-defined]
    numeric = [c for c in drift.judged if c in whole.select_dtypes("number").columns]
    categorical = [c for c in drift.judged if c not in numeric]
    t4 = time.perf_counter()
    column_drift(whole, current, numeric, categorical, options)
    t_whole = time.perf_counter() - t4
    t5 = time.perf_counter()
    column_drift(drift.reference, current, numeric, categorical, options)
    t_sample = time.perf_counter() - t5
    cols = len(drift.features.scores)
    return [
        f"| {k:,}k | drift reference of a version, once (5k-cart sample of unseen days, here its test window, + the features drifting since its training window) | {len(test):,} test + {len(train):,} train carts | {t_ref:.1f} s | |",
        f"| {k:,}k | **one partition's drift verdict when nothing is shown** (scipy distances, {cols} judged features overall, per region ({len(drift.slices)} slices), and the score; `abandonment_drift` without reports) | {len(current):,} carts | **{t_judged:.2f} s** | {len(current) / t_judged:,.0f} rows/s |",
        f"| {k:,}k | Evidently's data-drift reports of that partition (features and score, rendered when it drifted or on request) | {len(current):,} carts | {t_render:.1f} s | verdict alone is {t_render / t_judged:.0f}× faster |",
        f"| {k:,}k | the feature drift against the whole training window instead of the cached sample | {len(whole):,} reference carts | {t_whole:.2f} s | cached reference is {t_whole / max(t_sample, 1e-9):.1f}× faster |",
    ]


def uplift_stages(
    con: duckdb.DuckDBPyConnection, features: pd.DataFrame, k: int
) -> tuple[list[str], Any]:
    """Cross-fitting both uplift learners on the randomised log, the bootstrap report, and the
    budgeted plan of one day's carts (the uplift asset's and the plan asset's code)."""
    from cartintel_assets.decisions.catalogue import load_catalogue
    from cartintel_assets.decisions.economics import action_table
    from cartintel_assets.decisions.plan import PlanRules, choose_actions
    from cartintel_assets.models.uplift import (
        cross_fit,
        fit_x_learner,
        intervention_log,
        session_facts,
        targeting_features,
        uplift_report,
    )

    con.register("session_features", features)
    log, _ = intervention_log(con)
    t, y = log["treatment"].to_numpy(), log["converted_7d"].to_numpy(dtype=int)
    num, cat = targeting_features()
    times = {}
    for learner in ("t-learner", "x-learner"):
        print(f"  uplift: cross-fitting the {learner} on {len(log):,} logged carts", flush=True)
        t0 = time.perf_counter()
        fit = cross_fit(log, t, y, learner, num, cat)
        times[learner] = time.perf_counter() - t0
    print("  uplift: bootstrap report, then one day's plan", flush=True)
    t1 = time.perf_counter()
    uplift_report(fit.effects, t, y, n_boot=200)
    t_report = time.perf_counter() - t1
    model = fit_x_learner(log, t, y, num, cat)
    started = pd.to_datetime(features["started_at"]).dt.date
    day = features[started == started.max()].reset_index(drop=True)
    day = day.merge(session_facts(con), on="session_id", how="left")
    carts = day.assign(blocked="", segment=None, send_at=day["session_ended_at"])
    t2 = time.perf_counter()
    options = action_table(
        carts, model.baseline(carts), model.effects(carts), load_catalogue(), 0.4
    )
    plan = choose_actions(carts, options, PlanRules(budget=0.5 * len(carts)))
    t_plan = time.perf_counter() - t2
    n = len(log)
    return [
        f"| {k:,}k | uplift: cross-fit {learner} (5 folds, 4 arms) | {n:,} logged carts | {sec:.1f} s | {n / sec:,.0f} rows/s |"
        for learner, sec in times.items()
    ] + [
        f"| {k:,}k | uplift: Qini/AUUC with 200-replicate bootstrap intervals, 4 arms | {n:,} logged carts | {t_report:.1f} s | |",
        f"| {k:,}k | **plan one day** (effects, action table, budgeted choice, caps) | {len(carts):,} carts, {int((plan['action'] != 'none').sum()):,} nudged | **{t_plan:.1f} s** | {len(carts) / t_plan:,.0f} carts/s |",
    ], model


def hillstrom_floor_rows() -> list[str]:
    """Both e-mails against no e-mail, both learners, out of fold."""
    from cartintel_assets.models.hillstrom import hillstrom_floor, load_hillstrom

    frame = load_hillstrom(settings.shared_data_dir())
    rows = []
    for arm in ("womens_email", "mens_email"):
        for learner in ("t-learner", "x-learner"):
            r = hillstrom_floor(frame, arm, learner).report
            rows.append(
                f"| {arm} | {learner} | {r['qini']:.4f} [{r['qini_lo']:.4f}, {r['qini_hi']:.4f}]"
                f" | {r['auuc']:.4f} | {r['uplift_at_30']:.4f} | {r['uplift_at_10']:.4f} | {r['ate']:.4f} |"
            )
    return rows


def uci_floor() -> list[str]:
    """The real-data floor, logged to the project's MLflow store under its own experiment."""
    from dataclasses import asdict

    from cartintel_assets.models.uci import UCI_EXPERIMENT, load_uci, uci_evaluations
    from cartintel_assets.resources.mlflow import MLflowResource

    store = MLflowResource().store()
    experiment = store.experiment_id(UCI_EXPERIMENT)
    data = load_uci(settings.shared_data_dir())
    rows = []
    for tune, how in ((False, "fixed parameters"), (True, "tuned inside each training set")):
        evaluations = uci_evaluations(data, XGBParams(), tune=tune)
        runs = {k: store.log_evaluation(experiment, **asdict(e)) for k, e in evaluations.items()}
        cv_run, month_run = runs[f"cv5{'_tuned' * tune}"], runs[f"month{'_tuned' * tune}"]
        client = store.client
        cv = client.get_run(cv_run).data.metrics
        month = client.get_run(month_run).data.metrics
        fold_auc = [m.value for m in client.get_metric_history(cv_run, "fold_roc_auc")]
        rows += [
            f"| stratified 5-fold CV (random), {how} | {cv['cv_roc_auc']:.3f} ± {np.std(fold_auc):.3f} | {cv['cv_pr_auc_purchase']:.3f} | {cv['cv_pr_auc']:.3f} | {cv['cv_calibration_error']:.3f} | `{cv_run}` |",
            f"| months: train Feb–Oct ({month['test_rows_train']:,.0f}), test Nov–Dec ({month['test_rows_test']:,.0f}), {how} | {month['test_roc_auc']:.3f} | {month['test_pr_auc_purchase']:.3f} | {month['test_pr_auc']:.3f} | {month['test_calibration_error']:.3f} | `{month_run}` |",
        ]
    return rows


def write_report(path: Path, lines: list[str]) -> None:
    """Write BENCHMARKS.md, keeping its scale section: that one is `make bench-scale`'s (hours
    of runs), left as it is."""
    scale = split_section(path.read_text(), SECTION)[1] if path.exists() else ""
    path.write_text("\n".join(lines) + "\n" + ("\n" + scale if scale else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument(
        "--small", type=int, default=100_000, help="the smaller size for the model stages"
    )
    args = parser.parse_args()
    uci = uci_floor()
    print("\n".join(uci))
    hill = hillstrom_floor_rows()
    print("\n".join(hill))
    _, small_model, small_serving = run(args.small, 14)
    rows, model_rows, serving_rows = run(args.sessions, args.days)
    header = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on {os.cpu_count()} cores"
        f" ({_cpu()}), Python {platform.python_version()}. Absolute times on this shared machine are"
        " indicative only.",
        "",
        "## Simulator and ingestion at 1M sessions",
        "",
        "Target: simulate 1,000,000 sessions in under 2 minutes. Ingestion is the same code the"
        " Dagster assets run (`ingest_partition`), without the GX validation and run bookkeeping.",
        "",
        "| step | time | throughput |",
        "|---|---|---|",
    ]
    model = [
        "",
        "## Abandonment and uplift models: features, training, batch scoring and the plan at 100k and 1M sessions",
        "",
        "The same functions the Dagster assets call, on the warehouse ingested above (100k: 14"
        f" days; 1M: {args.days} days). Training uses the carts whose 7-day window is complete,"
        " split by day (train / validation for early stopping and calibration / test). The uplift rows cross-fit both learners on the randomised log of the same warehouse (every consenting abandoner) and plan the last day's carts with a budget of 0.5 per cart.",
        "",
        "| sessions | step | rows | time | throughput |",
        "|---|---|---|---|---|",
        *small_model,
        *model_rows,
        "",
        "Reason codes are exact TreeSHAP contributions, read from per-leaf tables built once per"
        " model (`models/tree_shap.py`; XGBoost's `pred_contribs` to float32 rounding, which"
        " `test_tree_shap` checks) in one compiled pass over the leaves for a whole batch. Their"
        " cost still grows with the number of leaves, so a model that stops later (more data)"
        " scores more slowly per row.",
    ]
    serving = [
        "",
        "## Real-time scoring: `cartintel serve` against `mlflow models serve`, side by side",
        "",
        "Each server runs with 2 uvicorn workers (one XGBoost thread each) on the warehouse and"
        " model above; wrk (a third process on the same 2 cores) cycles through up to 200 real carts"
        " of 15-25 events (the last day's, with the shop's raw ids) for 15 s per row."
        " `cartintel serve` answers the full `/score`: point-in-time features (the batch's"
        " `compute_features`), risk and 3 SHAP reason codes, segment, uplift per arm (the"
        " x-learner: 13 boosters), the action within consent, holdout, caps and budget, and the"
        " decision logged to the warehouse. MLflow's `/invocations` answers the risk of the cart's"
        " ready-made feature row. The yardstick is the issue's bare FastAPI endpoint running"
        " `inplace_predict` on the encoded row: it shows how fast this machine answers the"
        " cheapest request in this run (the issue quotes p99 ~1 ms and ~1,700 req/s for it when"
        " the targets were set). Latencies are wrk's (corrected for coordinated omission)."
        " Targets of the issue: p99 < 10 ms at concurrency 1 and at least 5× MLflow's throughput"
        " at 16. A server that answers less at 16 than half of what it answers at 1 has stalled,"
        " and no ratio is given.",
        "",
        "| sessions | server | concurrency | requests/s | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|",
        *small_serving,
        *serving_rows,
    ]
    floor = [
        "",
        "## Real-data floor: UCI Online Shoppers (12,330 sessions, label: not `Revenue`)",
        "",
        "Same training code (`fit_boosted_model`, early stopping and isotonic calibration on a"
        " stratified 20 % of each training set). Published reference: gradient boosting ROC-AUC"
        " ≈ 0.93, PR-AUC ≈ 0.75 with purchase as the positive class (Heliyon 2023, e15163),"
        " random splits. Runs are in the MLflow experiment `cartintel/uci-online-shoppers`."
        " Tuned: per training set, the depth (3/4/6) and leaf weight (1/5) at learning rate"
        " 0.03 with the best mean ROC-AUC over an inner stratified 3-fold of that training set"
        " only (`models/uci.py: tuned_params`); the test rows never take part in the choice.",
        "",
        "| split | ROC-AUC | PR-AUC (purchase) | PR-AUC (abandon) | calibration error | MLflow run |",
        "|---|---|---|---|---|---|",
        *uci,
    ]
    uplift_floor = [
        "",
        "## Real-data floor of the uplift learners: Hillstrom e-mail experiment (64,000 customers)",
        "",
        "Outcome `visit`, each e-mail against `No E-Mail`, stratified 5-fold cross-fitting, the"
        " storefront's learners and metrics. Qini and AUUC use scikit-uplift's normalisation"
        " (random 0, perfect 1; 95 % bootstrap interval), uplift@k takes the top k of each group"
        " (`strategy='by_group'`). Published reference (women's e-mail): uplift@30 % = 0.0661"
        " (scikit-uplift tutorial), Qini ≈ 0.06-0.07 for tuned S/T-learners.",
        "",
        "| e-mail | learner | Qini [95 %] | AUUC | uplift@30 % | uplift@10 % | ATE |",
        "|---|---|---|---|---|---|---|",
        *hill,
    ]
    write_report(args.out, header + rows + model + serving + floor + uplift_floor)
    print("\n".join(rows + model + serving))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
