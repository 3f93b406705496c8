"""The `cartintel` command: simulate a storefront, land a foreign event log, run the demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cartintel_assets import settings
from cartintel_assets.registry.names import PROMOTED_MODELS
from cartintel_assets.simulation.storefront import (
    DEMO_RUN,
    Shop,
    StorefrontConfig,
    land_day,
    land_interventions,
    parse_date,
    parse_drift,
    write_truth,
)

if TYPE_CHECKING:
    from dagster import DagsterInstance


def _progress(prefix: str) -> Callable[[str], None]:
    start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{prefix} {time.monotonic() - start:6.1f}s] {msg}", flush=True)

    return say


def _add_storefront_args(p: argparse.ArgumentParser, days: int, sessions: int) -> None:
    d = StorefrontConfig()
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default $CARTINTEL_STOREFRONT or data/storefront)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--start-date", default=d.start_date.isoformat(), help="first day, YYYY-MM-DD")
    p.add_argument("--days", type=int, default=days)
    p.add_argument("--sessions-per-day", type=int, default=sessions)
    p.add_argument("--customers", type=int, default=d.n_customers)
    p.add_argument("--products", type=int, default=d.n_products)
    p.add_argument("--regions", default=",".join(d.regions), help="comma-separated region codes")
    p.add_argument(
        "--bad-row-rate", type=float, default=0.0, help="share of event lines given one defect"
    )
    p.add_argument(
        "--drift",
        action="append",
        default=[],
        metavar="KIND:DAY:MAGNITUDE[:REGION]",
        help="inject drift from a day, e.g. shipping_cost:7:0.5:DE (repeatable)",
    )


def _config(args: argparse.Namespace) -> StorefrontConfig:

    regions = tuple(r.strip() for r in args.regions.split(",") if r.strip())
    default = StorefrontConfig()
    weights = (
        default.region_weights
        if regions == default.regions
        else tuple(1.0 / len(regions) for _ in regions)
    )
    return StorefrontConfig(
        seed=args.seed,
        start_date=parse_date(args.start_date),
        days=args.days,
        sessions_per_day=args.sessions_per_day,
        n_customers=args.customers,
        n_products=args.products,
        regions=regions,
        region_weights=weights,
        bad_row_rate=args.bad_row_rate,
        drift=tuple(parse_drift(s) for s in args.drift),
    )


def _simulate(args: argparse.Namespace) -> Path:
    import shutil

    from cartintel_assets.simulation.storefront import simulate, write_storefront

    out = (args.out or settings.storefront_dir()).resolve()
    say = _progress("simulate")
    cfg = _config(args)
    store = simulate(cfg, say)
    if out.exists():
        shutil.rmtree(out)  # a storefront is regenerated whole, never mixed with an older one
    say(f"writing {out}")
    write_storefront(store, out)
    n_events = sum(store.event_lines(day) for day in store.landing)
    say(
        f"done: {len(store.truth_sessions):,} sessions, {n_events:,} event lines over {cfg.days} days -> {out}"
    )  # type: ignore[attr-defined]
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    _simulate(args)
    return 0


def cmd_land_events(args: argparse.Namespace) -> int:
    from cartintel_assets.defs.partitions import PartitionSettings
    from cartintel_assets.ingestion.mapping import (
        EventLogMapping,
        MappingError,
        land_foreign_log,
        rejects_path,
    )

    mapping_path = args.mapping
    bundled = Path(__file__).parent / "mappings"
    if not mapping_path.exists():
        mapping_path = bundled / f"{mapping_path.name}.yaml"
        if not mapping_path.exists():
            names = ", ".join(sorted(p.stem for p in bundled.glob("*.yaml")))
            print(f"error: mapping {args.mapping} not found (bundled: {names})", file=sys.stderr)
            return 2
    landing = (args.landing or settings.landing_dir()).resolve()
    # only a configured first day bounds the log; unset, the partitions follow what landed
    first_day = settings.deployed(PartitionSettings, "partitions").first_day
    try:
        mapping = EventLogMapping.from_yaml(mapping_path)
        s = land_foreign_log(
            args.source, mapping, landing, first_day=first_day, say=_progress("land-events")
        )
    except MappingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{s.lines:,} lines read ({s.empty_lines:,} empty lines skipped): {s.events_landed:,}"
        f" events in {s.sessions:,} sessions landed over {len(s.days)} days"
        f" ({min(s.days, default='-')}..{max(s.days, default='-')}) in {landing};"
        f" {s.rows_rejected:,} lines rejected with a reason in {rejects_path(landing, mapping.name)}"
        f" {s.rejected_by_reason or ''}\nnext: `cartintel ingest` (or materialise the days in the"
        " Dagster UI; reload the code location first if these days are new to it)"
    )
    return 0 if s.accounted else 1


def cmd_ingest(args: argparse.Namespace) -> int:
    """Run the daily job on every landed day in [--from, --to], in order, then the labels of
    those days, and account for every line of each landed log."""
    import dagster as dg

    from cartintel_assets.ingestion.ingest import landed_folders

    landing = (args.landing or settings.landing_dir()).resolve()
    os.environ["CARTINTEL_LANDING"] = str(landing)  # read by the definitions and the jobs
    from cartintel_assets.defs.partitions import PartitionRangeError, require_day

    landed, other = landed_folders(landing)
    days = [
        d
        for d in landed
        if (not args.from_day or d >= args.from_day) and (not args.to_day or d <= args.to_day)
    ]
    try:
        for bound in (args.from_day, args.to_day):
            if bound:
                require_day(bound)
        for day in days:  # every landed day of the range, before anything runs
            require_day(day)
    except PartitionRangeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    say = _progress("ingest")
    if other:  # e.g. the storefront's folder given instead of its landing/ (which holds the days)
        say(f"warning: folders in {landing} that are not days (YYYY-MM-DD), not ingested: {other}")
    if not days:
        print(f"error: no landed day in {landing} between the bounds", file=sys.stderr)
        return 2
    ensure_dagster_home()
    say(f"{len(days)} landed days {days[0]}..{days[-1]} from {landing}")
    with dg.DagsterInstance.get() as instance:
        failed_checks, ran = _ingest_days(instance, days, say)
        # the accounting of every landed log, as the asset the Dagster UI shows
        result = _run(instance, "landing_accounting_job")
    evals = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    accounts = evals[0].metadata["sources"].value if evals else []  # type: ignore[union-attr]
    ok = ran and result.success and bool(evals) and evals[0].passed  # type: ignore[union-attr]
    for a in accounts:
        say(
            f"{a['source']} ({a['mapping']}): {a['lines']:,} lines = {a['accepted']:,} accepted"
            f" + {a['quarantined']:,} quarantined + {a['rejected']:,} rejected at landing"
            + (f" + {a['erased']:,} erased" if a.get("erased") else "")
            + f": {'every line accounted for' if a['accounted'] else 'NOT ACCOUNTED FOR'}"
            + (f"; days not ingested: {a['not_ingested']}" if a["not_ingested"] else "")
        )
    blocking = [c for c in failed_checks if not c.endswith("(WARN)")]
    say(
        f"done: {len(failed_checks)} failed checks, {len(blocking)} blocking"
        + "".join(f"\n  {c}" for c in blocking[:10])
        + "\nlook at the days, checks and quarantine: `make dev` -> http://127.0.0.1:3000"
    )
    return 0 if ok and not blocking else 1


# the local instance: run monitoring fails a run whose process died (defs/launcher.py)
LOCAL_INSTANCE = """telemetry:
  enabled: false
run_launcher:
  module: cartintel_assets.defs.launcher
  class: MonitoredRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: 10
  max_resume_run_attempts: 0
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
"""


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, default .dagster_home, creating it with telemetry off if new.

    Without a DAGSTER_HOME the Dagster CLI and UI use a temporary instance and lose the history.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(LOCAL_INSTANCE)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def cmd_dev(args: argparse.Namespace) -> int:
    """Replace this process by `dagster dev` on the workspace, with a persistent instance."""
    import signal

    ensure_dagster_home()
    # A `dagster dev` started in the background by a script inherits an ignored SIGINT and then
    # ignores SIGTERM as well; restore the defaults so it can always be stopped.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    dagster = str(Path(sys.executable).with_name("dagster"))
    argv = [dagster, "dev", "-w", str(args.workspace), "-h", args.host, "-p", str(args.port)]
    os.execv(dagster, argv)
    return 0  # not reached


DEMO_MONITORED_DAYS = 3  # days checked for drift (before the reference's latest 3)

# Progress is printed per day; Dagster's per-event console log would bury it (the UI keeps it all).
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def cmd_demo(args: argparse.Namespace, records: list[dict[str, Any]] | None = None) -> int:
    """`--days` of the shop's randomised experiment, the models trained on them, then
    `--loop-days` of the closed loop: each day lands, is scored and planned, and the storefront
    acts on the day's decisions (the plan's exploration and holdout included); every
    `--retrain-every` days the uplift model is retrained on every logged decision. `records`, if
    given, gets one row per loop day (what the decisions truly earned)."""
    import dataclasses
    import shutil

    import dagster as dg

    out = (args.out or settings.storefront_dir()).resolve()
    cfg = dataclasses.replace(
        _config(args), days=args.days + args.loop_days, experiment_days=args.days
    )
    say = _progress("simulate")
    shop = Shop(cfg, say)
    if out.exists():
        shutil.rmtree(out)  # a storefront is regenerated whole, never mixed with an older one
    landing, warehouse = out / "landing", settings.warehouse_path()
    say(f"landing the {args.days} days of the randomised experiment in {landing}")
    for i in range(args.days):
        land_day(shop, i, landing)
        land_interventions(shop, i, landing)
    # the job's landing resource reads this at run time; re-materialising a day replaces it
    os.environ["CARTINTEL_LANDING"] = str(landing)
    days = [cfg.day(i).isoformat() for i in range(args.days)]
    home = ensure_dagster_home()
    where = f"runs kept in DAGSTER_HOME={home} (shown by `make dev`)"
    with dg.DagsterInstance.get() as instance:
        failed_checks, planned = _run_days(instance, days)
        loop = [cfg.day(i).isoformat() for i in range(args.days, cfg.days)]
        if loop and planned:
            failed_checks += _closed_loop(
                instance, shop, landing, warehouse, args.retrain_every, records
            )
            days += loop
        elif loop:
            say(
                f"the closed loop ({len(loop)} days) does not run: no uplift policy passed its"
                " gates to pilot, so there is no plan to act on; below ~20k randomised carts a"
                " policy's value is too uncertain to prove (BENCHMARKS.md): raise"
                " --sessions-per-day or --days"
            )
    store = shop.storefront()
    write_truth(store, out / "truth")
    _summary(warehouse, days, failed_checks, where)
    _erase_one(landing / days[-1] / "sessions.parquet")
    return 0


def _erase_one(sessions: Path) -> None:
    """The right to erasure, shown: the demo's last cart's customer erased from every store."""
    customer = str(pd.read_parquet(sessions, columns=["customer_id"])["customer_id"].iloc[-1])
    print(f"\n== erasure: customer {customer} asked to be forgotten ==")
    _erase(customer, None, "demo: right to erasure")


def _run(
    instance: DagsterInstance,
    job_name: str,
    partition_key: str | None = None,
    failure: str | None = None,
    failed_checks: list[str] | None = None,
) -> Any:
    """Run one job in this process; a failure is added to `failed_checks` as `failure`."""
    from cartintel_assets.definitions import defs
    from cartintel_assets.defs.partitions import require_day

    result = defs.resolve_job_def(job_name).execute_in_process(
        partition_key=partition_key and require_day(partition_key),
        instance=instance,
        raise_on_error=False,
        run_config=QUIET_RUN_CONFIG,
    )
    if failure and not result.success and failed_checks is not None:
        failed_checks.append(f"{failure} (see the Dagster UI)")
    return result


def _closed_loop(
    instance: DagsterInstance,
    shop: Shop,
    landing: Path,
    warehouse: Path,
    retrain_every: int = 7,
    records: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Each remaining day of `shop`: land it, run the daily job, score and plan it, let the
    storefront act on the day's decisions (the published plan's and `/score`'s) and land the
    outcomes. Every `retrain_every` days (and after the last): the labels of those days, the
    pilot asked to go global on what it realised, the uplift model retrained on every logged
    decision and the retrained policy asked for pilot. Prints what the decisions truly earned
    (the simulator's truth) beside the oracle; appends one row per day to `records`."""
    import numpy as np

    from cartintel_assets.decisions.catalogue import NONE
    from cartintel_assets.decisions.evaluation import truth_margins
    from cartintel_assets.decisions.log import day_decisions
    from cartintel_assets.decisions.ope import greedy_policy, true_value
    from cartintel_assets.decisions.settings import PlanSettings
    from cartintel_assets.resources import WarehouseResource

    say = _progress("loop")
    failed: list[str] = []
    cfg = shop.cfg
    first = shop.landed + 1
    plan_settings = PlanSettings().deployed()
    catalogue = plan_settings.catalogue()
    unlabelled: list[str] = []
    for k, i in enumerate(range(first, cfg.days), 1):
        day = cfg.day(i).isoformat()
        land_day(shop, i, landing)
        daily = _run(instance, "storefront_daily_job", day, f"{day} daily job", failed)
        _run(instance, "abandonment_scoring_job", day, f"abandonment_scores {day}", failed)
        _run(instance, "intervention_plan_job", day, f"intervention_plan {day}", failed)
        with WarehouseResource(database=str(warehouse)).reader() as con:
            decided = day_decisions(con, day)
        applied = shop.act(decided)
        land_interventions(shop, i, landing)
        _run(instance, "interventions_ingestion_job", day, f"raw_interventions {day}", failed)
        truth = shop.truth_sessions().set_index("session_id")
        # a cart in fact bought (a return visit, or a first visit) is left alone
        decided = decided[decided["session_id"].isin(truth.index[truth["abandoned"]])]
        truth = truth.loc[decided["session_id"]]
        margins = truth_margins(truth, catalogue, plan_settings.margin_rate)
        actions = decided["arm"].replace({"control": NONE}).to_numpy(dtype=object)
        earned = true_value(actions, margins)
        oracle = true_value(greedy_policy(margins), margins)
        by = ", ".join(f"{v:,} {c}" for c, v in decided["chosen_by"].value_counts().items())
        say(
            f"[{k}/{cfg.days - first}] {day}: daily run {'ok' if daily.success else 'FAILED'};"
            f" acted on {applied:,} carts{f' ({by})' if by else ' (no plan published)'},"
            f" {shop.not_applied:,} left alone (bought after all);"
            f" true incremental margin {earned:,.0f} (the oracle, no budget: {oracle:,.0f})"
        )
        if records is not None:
            records.append(
                {
                    "day": day,
                    "loop_day": k,
                    "decided": len(decided),
                    **{f"by_{c}": int(v) for c, v in decided["chosen_by"].value_counts().items()},
                    "true_margin": earned,
                    **{
                        f"true_margin_{c}": true_value(
                            np.where(decided["chosen_by"].to_numpy() == c, actions, NONE), margins
                        )
                        for c in ("plan", "exploration", "api")
                    },
                    "oracle_margin": oracle,
                }
            )
        unlabelled.append(day)
        if k % retrain_every == 0 or i == cfg.days - 1:
            _retrain(instance, unlabelled, failed, say)
            unlabelled = []
    return failed


def _retrain(instance: DagsterInstance, days: list[str], failed: list[str], say: Any) -> None:
    """After a stretch of the loop: the labels of its `days`, the pilot asked to go global on
    its realised margin against the holdout, the uplift model retrained on every logged decision
    (experiment, plan, exploration, `/score`) and the retrained policy asked for pilot."""
    for day in days:
        _run(instance, "abandonment_labels_job", day, f"abandonment_labels {day}", failed)
    md = _move(instance, "uplift", "promote", "global", "cartintel demo")
    say(f"promote the uplift pilot to global: {md['outcome']}: {md['reason']}")
    say("retraining the uplift model on every logged decision (experiment, plan, exploration)")
    result = _run(instance, "uplift_training_job", None, "uplift_model: retraining", failed)
    _say_uplift(result, say)
    if result.success:
        md = _move(instance, "uplift", "promote", "pilot", "cartintel demo")
        say(
            f"promote the retrained policy to pilot: {md['outcome']} (version"
            f" {md['to_version']}): {md['reason']}"
        )
    say("rebuilding the executive dashboard with the loop's days")
    _run(instance, "reporting_job", None, "executive_dashboard: the dashboard failed", failed)


def _say_uplift(result: Any, say: Any) -> None:
    """One line on the uplift version a training run registered."""
    for m in result.asset_materializations_for_node("uplift_model"):
        md = {k: v.value for k, v in m.metadata.items()}
        say(
            f"uplift version {md['model_version']} ({md['learner']}) on {md['rows_log']:,} logged"
            f" carts, alias {md['alias']}, gate {md['gate']}: arms {md['allowed_arms']}; policy"
            f" value (DR) {md['policy_value_dr']:.0f} vs top-k by risk"
            f" {md['top_k_by_risk_value_dr']:.0f}"
        )


def _ingest_days(
    instance: DagsterInstance, days: list[str], say: Callable[[str], None]
) -> tuple[list[str], bool]:
    """The daily job on each day, in order, then the labels of every day (now that the later
    days have landed, they can be final); returns the failed checks and whether all ran."""
    from cartintel_assets.definitions import defs
    from cartintel_assets.defs.partitions import require_day

    job = defs.resolve_job_def("storefront_daily_job")
    failed_checks: list[str] = []
    all_ok = True
    for i, day in enumerate(days, 1):
        result = job.execute_in_process(
            partition_key=require_day(day),
            instance=instance,
            raise_on_error=False,
            run_config=QUIET_RUN_CONFIG,
        )
        evals = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        bad = [f"{day} {ev.check_name} ({ev.severity.value})" for ev in evals if not ev.passed]  # type: ignore[union-attr]
        failed_checks += bad
        all_ok &= result.success
        state = "ok" if result.success else "FAILED"
        blocking = sum(b.endswith("(ERROR)") for b in bad)
        say(
            f"[{i}/{len(days)}] {day}: run {state}, {len(evals)} checks, {len(bad)} failed"
            f" ({blocking} blocking; warnings include the expectations its quarantined lines broke)"
        )
    for i, day in enumerate(days, 1):  # now that later days have landed, labels can be final
        result = _run(instance, "abandonment_labels_job", day)
        all_ok &= result.success
        say(f"[{i}/{len(days)}] {day}: labels {'ok' if result.success else 'FAILED'}")
    return failed_checks, all_ok


def _run_days(instance: DagsterInstance, days: list[str]) -> tuple[list[str], bool]:
    """Run the daily job on each day, in order, then train, promote, score and plan, printing
    progress; return the failed checks and whether a plan could be made (an uplift policy
    passed its gates to pilot)."""
    say = _progress("demo")
    failed_checks, _ = _ingest_days(instance, days, say)

    def run(job_name: str, partition_key: str | None = None, failure: str | None = None) -> Any:
        return _run(instance, job_name, partition_key, failure, failed_checks)

    say("segmenting customers (latent-class model, MLflow run, registry version)")
    result = run("segmentation_job", failure="segmentation_job: segmentation failed")
    for m in result.asset_materializations_for_node("segmentation"):
        if m.asset_key.to_user_string() == "segment_profiles":
            md = {k: v.value for k, v in m.metadata.items()}
            say(f"segmentation version {md['model_version']}: {md['match_summary']}")
    say("friction: review signals per product and category, drivers per segment/category/region")
    run("friction_job", failure="friction_job: review aggregates or friction drivers failed")
    say("training the abandonment-risk model (MLflow run, registry version, gates)")
    result = run(
        "abandonment_training_job",
        failure="abandonment_model: training or a blocking gate failed",
    )
    for m in result.asset_materializations_for_node("abandonment_model"):
        md = {k: v.value for k, v in m.metadata.items()}
        say(
            f"model version {md['model_version']} ({md['model_uri']}), alias {md['alias']}, gate {md['gate']}:"
            f" test ROC-AUC {md['test_roc_auc']:.3f} (logistic baseline {md['baseline_test_roc_auc']:.3f}),"
            f" PR-AUC {md['test_pr_auc']:.3f}, calibration error {md['test_calibration_error']:.3f};"
            f" global: {md['global']}"
        )
    if not result.success:
        return failed_checks, False
    md = _move(instance, "abandonment", "promote", "pilot", "cartintel demo")
    say(f"promote to pilot: {md['outcome']} (version {md['to_version']}): {md['reason']}")
    if md["outcome"] != "moved":
        failed_checks.append(f"model_promotions: promotion to pilot refused: {md['reason']}")
    # The version's drift reference is the latest 3 landed days; the 3 days before them were
    # not learnt from either (their outcomes are not final yet), so they are the ones to check.
    monitored = days[-2 * DEMO_MONITORED_DAYS : -DEMO_MONITORED_DAYS]
    for day in [*monitored, days[-1]]:
        say(f"scoring {day} by phase ({md['aliases_now']})")
        run("abandonment_scoring_job", day, f"abandonment_scores {day}: scoring failed")
        if day not in monitored:
            continue
        result = run("monitoring_job", day, f"abandonment_drift {day}: monitoring failed")
        for e in result.all_events:
            if e.event_type_value == "ASSET_CHECK_EVALUATION":
                ev = e.event_specific_data
                state = "passed" if ev.passed else "FAILED"  # type: ignore[union-attr]
                say(f"  drift vs the reference, {ev.check_name}: {state}")  # type: ignore[union-attr]
                if not ev.passed:  # type: ignore[union-attr]
                    failed_checks.append(f"{day} {ev.check_name} (WARN)")  # type: ignore[union-attr]
    say(
        "training the uplift model on the intervention log (T-, X- and DR-learner, Qini, off-policy gate)"
    )
    result = run("uplift_training_job", failure="uplift_model: training or a blocking gate failed")
    _say_uplift(result, say)
    if not result.success:
        return failed_checks, False
    md = _move(instance, "uplift", "promote", "pilot", "cartintel demo")
    say(
        f"promote the uplift policy to pilot: {md['outcome']} (version {md['to_version']}): {md['reason']}"
    )
    if md["outcome"] != "moved":
        failed_checks.append(f"model_promotions: uplift to pilot refused: {md['reason']}")
    say(f"planning the interventions of {days[-1]} (budget, consent, caps, holdout, ethics)")
    run("intervention_plan_job", days[-1], f"intervention_plan {days[-1]}: planning failed")
    say("building the executive dashboard (self-contained HTML)")
    run("reporting_job", failure="executive_dashboard: the dashboard failed")
    return failed_checks, md["outcome"] == "moved"


def _summary(warehouse: Path, days: list[str], failed_checks: list[str], where: str) -> None:
    """What the demo's days produced, read through the dashboard's own queries."""
    from cartintel_assets.models.reasons import explain_all
    from cartintel_assets.reporting import queries as q
    from cartintel_assets.reporting.dashboard import page_path
    from cartintel_assets.resources import WarehouseResource

    lo, hi = days[0], days[-1]
    with WarehouseResource(database=str(warehouse)).reader() as con:
        log = q.ingestion_totals(con, lo, hi)
        rates = q.label_rates(con, lo, hi)
        n_features = q.feature_rows(con, lo, hi)
        scored = q.scored_carts(con, hi)
        categories = q.review_signals(con)
        segments = q.segment_sizes(con)
        frictions = q.friction_drivers(con, "segment")
        planned = q.planned_carts(con, hi)
        checks = q.monitoring_checks(con)
        moves = q.promotion_moves(con)
        card = q.quality_scorecard(con)
    frictions = frictions[frictions["friction_rank"] == 1] if not frictions.empty else frictions
    plan = q.plan_by_action(planned)
    plan = plan.sort_values("carts", ascending=False, kind="stable") if not plan.empty else plan
    drift = (
        checks[checks["check_name"] == "abandonment_feature_drift"] if not checks.empty else checks
    )
    if not card.empty:
        card["partition_date"] = card["partition_date"].astype(str)
        card = (
            card[card["partition_date"].between(lo, hi)]
            .groupby("standard")
            .agg(
                row_score=("row_score", "mean"),
                blocking_failures=("blocking_failures", "sum"),
                warnings=("warnings", "sum"),
            )
            .round({"row_score": 4})
            .reset_index()
        )
    print(f"\n== cartintel demo summary: {days[0]} .. {days[-1]} ==")
    print(log.to_string(index=False))
    if not rates.empty:
        labels = rates.iloc[0]
        print(
            f"\ncart sessions: {int(labels['carts']):,} (return visits that buy an earlier cart count"
            f" too); abandoned in-session {_rate(labels['abandoned'])}; with a complete 7-day"
            f" window ({int(labels['complete']):,}): harmful {_rate(labels['harmful'])} of carts,"
            f" benign {_rate(labels['benign'])} of abandoned"
        )
    print(f"point-in-time feature rows: {n_features:,}")
    if not scored.empty:
        print(
            f"\nrisk scores of {hi}: {len(scored):,} open carts, model version"
            f" {scored['model_version'].iloc[0]}; the riskiest, and why (* a friction the shop"
            " can act on):"
        )
        for _, c in scored.head(5).iterrows():
            said = explain_all(list(c["reason_codes"]), c)
            print(
                f"  {c['session_id']}  risk {c['risk']:.2f} (decile {c['risk_decile']})  "
                + "; ".join(("* " if r.actionable else "") + r.text for r in said)
            )
    if not segments.empty:
        print("\ncustomer segments (id, profile, customers, mean assignment probability):")
        for g in segments.itertuples():
            print(f"  {g.segment_id}  {g.segment_name:<28} {g.customers:>5}  {g.probability:.2f}")
    if not frictions.empty:
        print(
            "\ntop friction driver per segment (mean |SHAP| towards harmful abandonment, stability):"
        )
        for f in frictions.itertuples():
            print(f"  {f.scope:<28} {f.feature:<22} {f.mean_abs_shap:.3f}  {f.stability:.2f}")
    if not categories.empty:
        print("\nreviews by category (share negative, share complaining about shipping):")
        for r in categories.itertuples():
            print(
                f"  {r.category:<12} {r.reviews:>5} reviews, mean rating {r.mean_rating:.2f},"
                f" negative {r.negative_share:.1%}, shipping {r.share_negative_shipping:.1%}"
            )
    if not plan.empty:
        print(
            f"\nintervention plan of {hi} (carts, expected spend, incremental conversions"
            " and margin):"
        )
        for a in plan.itertuples():
            print(
                f"  {a.action:<16} {a.carts:>5}  {a.expected_cost:>8.2f}"
                f"  {a.incremental_conversions:>6.1f}  {a.incremental_margin:>8.2f}"
            )
        reasons = planned.loc[planned["action"] == "none", "reason"].value_counts()
        print("  no action because: " + "; ".join(f"{r} {n}" for r, n in reasons.items()))
    if not moves.empty:
        print("\npromotion log (MLflow aliases challenger/pilot/global):")
        for m in moves.itertuples():
            print(
                f"  {m.logged_at:%Y-%m-%d %H:%M:%S}  {m.model_name} {m.action} {m.phase}: {m.outcome}"
                f" ({m.from_version or 'none'} -> {m.to_version or 'none'})"
            )
    if not drift.empty:
        print(
            "\nfeature drift against each scoring version's reference (Evidently reports of drifted days):"
        )
        for d in drift.itertuples():
            shown = json.loads(d.detail).get("reports") or ["no report: nothing drifted"]
            state = "passed" if d.passed else "FAILED"
            print(
                f"  {d.partition_date:%Y-%m-%d}  v{d.model_version}  drifted share {d.value:.3f}"
                f"  {state}  {', '.join(shown)}"
            )
    print("\ndata-quality scorecard (mean row score, summed failures over the days):")
    print(card.to_string(index=False))
    blocking = [c for c in failed_checks if not c.endswith("(WARN)")]
    print(
        f"\nfailed checks: {len(failed_checks)}, of which {len(blocking)} blocking (the others are"
        " warnings, e.g. the expectations that landed lines broke before quarantine)"
        + "".join(f"\n  {c}" for c in sorted(failed_checks, key=lambda c: c not in blocking)[:10])
    )
    print(f"\nwarehouse: {warehouse}\n{where}")
    print(
        "look at it: `make dev` -> http://127.0.0.1:3000 (assets, checks, run metadata);"
        " `make mlflow` -> http://127.0.0.1:5000"
    )
    dashboard = page_path(settings.reports_dir())
    if dashboard.exists():
        print(f"executive dashboard: {dashboard} (open it in a browser; no network needed)")
    print(
        "real-time scoring: `make serve` (cartintel serve) -> http://127.0.0.1:8000/docs, then\n"
        f"  curl -s -X POST http://127.0.0.1:8000/score -H 'content-type: application/json'"
        f" -d @{os.path.relpath(SAMPLE_REQUEST)}\n  and the dashboard at http://127.0.0.1:8000/dashboard"
    )


def _rate(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.1%}"


SAMPLE_REQUEST = Path(__file__).parent / "serving" / "sample_request.json"


def _move(instance: DagsterInstance, model: str, action: str, phase: str, by: str) -> dict:
    """Run the promotion or rollback job for one move; return its materialisation metadata."""
    from cartintel_assets.definitions import defs

    job = "promote_model_job" if action == "promote" else "rollback_model_job"
    config = {"model": model, "action": action, "phase": phase, "triggered_by": by}
    # a refused move fails its blocking gate check, which Dagster's console logger prints as an
    # error with a stack trace; the caller prints the refusal's reason instead, and any other
    # failure is raised below with the run to look at
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            "ops": {"model_promotions": {"config": config}},
        },
    )
    found = result.asset_materializations_for_node("model_promotions")
    if not found:
        failure = result.get_step_failure_events()
        error = getattr(failure[0].event_specific_data, "error", None) if failure else None
        why = error.message if error is not None else "no materialisation"
        raise RuntimeError(f"{job} failed before recording the move (run {result.run_id}): {why}")
    return {"run_id": result.run_id, **{k: v.value for k, v in found[0].metadata.items()}}


def cmd_move(args: argparse.Namespace) -> int:
    """`cartintel promote` and `cartintel rollback`: one gated move, logged, exit 1 if refused."""
    import getpass

    import dagster as dg

    action = "promote" if args.command == "promote" else "rollback"
    phase = args.to if action == "promote" else args.phase
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        md = _move(instance, args.model, action, phase, f"cli:{getpass.getuser()}")
    print(
        f"{action} {md['model']} {phase}: {md['outcome']} (version {md['from_version']} ->"
        f" {md['to_version']})\nreason: {md['reason']}\naliases now: {md['aliases_now']}"
        f"\nlogged in promotion_log and the Dagster run {md['run_id']}"
    )
    return 0 if md["outcome"] == "moved" else 1


def _subject(customer: str | None, pseudonym: str | None) -> tuple[Any, Any]:
    """The data subject named on the command line, and where cartintel keeps data."""
    from cartintel_assets.privacy.subject import Stores, identify

    stores = Stores.from_settings()
    return stores, identify(stores, settings.pseudonym_key(), customer, pseudonym)


def _erase(customer: str | None, pseudonym: str | None, reason: str) -> None:
    """Erase one data subject from every store and print the receipt's summary."""
    from cartintel_assets.privacy.erasure import erase
    from cartintel_assets.resources.mlflow import MLflowResource

    stores, subject = _subject(customer, pseudonym)
    done = erase(stores, subject, reason, MLflowResource().store(), _progress("erase"))
    if done.receipt is None:
        print("nothing held on this subject in any store: nothing erased, no receipt (a no-op)")
        return
    print(f"erased: receipt {done.path}\n{erasure_summary(done.receipt)}")
    print(f"verify with: cartintel erase --verify {done.path}")


def cmd_erase(args: argparse.Namespace) -> int:
    """`cartintel erase`: remove one data subject from every store, with a signed receipt; or
    `--verify RECEIPT`. Runs outside Dagster, so the raw id never enters a run's stored config."""
    from cartintel_assets.privacy.erasure import verify

    if args.verify:
        try:
            doc = verify(args.verify)
        except ValueError as err:
            print(f"receipt NOT valid: {err}", file=sys.stderr)
            return 1
        print(f"receipt valid: {doc['erasure_id']} at {doc['erased_at']}")
        print(erasure_summary(doc))
        return 0
    if not (args.customer or args.pseudonym):
        print("cartintel erase: name the subject (--customer or --pseudonym)", file=sys.stderr)
        return 2
    _erase(args.customer, args.pseudonym, args.reason)
    return 0


def erasure_summary(receipt: dict[str, Any]) -> str:
    """A receipt's counts per store and the model versions tagged, a line each."""
    lines = [
        f"  {store:<9} {s['rows']:>6} rows, {len(s['files_removed'])} files removed"
        for store, s in receipt["stores"].items()
    ]
    versions = ", ".join(f"{v['model']} v{v['version']}" for v in receipt["model_versions"])
    lines.append(f"  models tagged as trained on erased rows: {versions or 'none'}")
    return "\n".join(lines)


def cmd_export_subject(args: argparse.Namespace) -> int:
    """`cartintel export-subject`: everything held on one data subject, as JSON."""
    from cartintel_assets.privacy.access import export

    stores, subject = _subject(args.customer, args.pseudonym)
    doc = export(stores, subject)
    text = json.dumps(doc, indent=2, default=str)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
        held = sum(len(s["records"]) for s in doc["sources"])
        print(f"{held} records from {len(doc['sources'])} sources written to {args.out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The scoring API on uvicorn; each worker process loads the models and a snapshot."""
    import uvicorn

    # one XGBoost/OpenMP thread per worker: two workers with two threads each thrash 2 cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["CARTINTEL_SERVE_SHADOW"] = "0" if args.no_shadow else "1"
    print(
        f"cartintel scoring API on http://{args.host}:{args.port} ({args.workers} worker(s)):"
        f" POST /score, GET /health, GET /models, GET /dashboard, OpenAPI at /docs",
        flush=True,
    )
    uvicorn.run(
        "cartintel_assets.serving.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cartintel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "simulate", help="simulate a storefront and write its landing files and truth"
    )
    _add_storefront_args(p, days=14, sessions=1500)
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser(
        "demo", help="simulate the default storefront and run the daily job on every day"
    )
    _add_storefront_args(p, days=DEMO_RUN.days, sessions=DEMO_RUN.sessions_per_day)
    p.set_defaults(customers=DEMO_RUN.n_customers)
    # 0.5 % defective event lines, so the quarantine and the checks have something to show
    p.set_defaults(func=cmd_demo, bad_row_rate=0.005)
    p.add_argument(
        "--loop-days",
        type=int,
        default=14,
        help="days of the closed loop after the experiment's --days: the storefront acts on"
        " each day's published plan (0: the experiment only)",
    )
    p.add_argument(
        "--retrain-every",
        type=int,
        default=7,
        help="days of the closed loop between uplift retrainings (and promotions)",
    )
    p = sub.add_parser("dev", help="the Dagster UI (webserver + daemon) on workspace.yaml")
    p.add_argument("--workspace", type=Path, default=Path("workspace.yaml"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_dev)
    p = sub.add_parser("land-events", help="land a foreign CSV event log through a mapping file")
    p.add_argument("--source", type=Path, required=True, help="the CSV event log")
    p.add_argument(
        "--mapping",
        type=Path,
        required=True,
        help="mapping YAML (or a bundled name: otto, rees46)",
    )
    p.add_argument(
        "--landing", type=Path, default=None, help="landing folder (default $CARTINTEL_LANDING)"
    )
    p.set_defaults(func=cmd_land_events)
    p = sub.add_parser(
        "ingest", help="run the daily job on the landed days, then account for every line"
    )
    p.add_argument("--from", dest="from_day", default=None, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="to_day", default=None, help="last day, YYYY-MM-DD")
    p.add_argument(
        "--landing", type=Path, default=None, help="landing folder (default $CARTINTEL_LANDING)"
    )
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("promote", help="move a model to the next phase through its gate")
    p.add_argument("--model", choices=sorted(PROMOTED_MODELS), default="abandonment")
    p.add_argument("--to", choices=["pilot", "global"], required=True)
    p.set_defaults(func=cmd_move)
    p = sub.add_parser("rollback", help="restore the version a phase held before (from the log)")
    p.add_argument("--model", choices=sorted(PROMOTED_MODELS), default="abandonment")
    p.add_argument("--phase", choices=["pilot", "global"], required=True)
    p.set_defaults(func=cmd_move)
    p = sub.add_parser("erase", help="erase one data subject from every store (signed receipt)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--customer", help="the raw customer id, as landed")
    who.add_argument("--pseudonym", help="or the customer's pseudonym, as in the warehouse")
    who.add_argument("--verify", type=Path, metavar="RECEIPT", help="verify a receipt instead")
    p.add_argument("--reason", default="data subject request", help="why (no personal data)")
    p.set_defaults(func=cmd_erase)
    p = sub.add_parser("export-subject", help="everything held on one data subject, as JSON")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", help="the raw customer id, as landed")
    who.add_argument("--pseudonym", help="or the customer's pseudonym, as in the warehouse")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: standard output)")
    p.set_defaults(func=cmd_export_subject)
    p = sub.add_parser("serve", help="the real-time scoring API (and the dashboard)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (one per core)")
    p.add_argument("--no-shadow", action="store_true", help="do not shadow-score the challenger")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
