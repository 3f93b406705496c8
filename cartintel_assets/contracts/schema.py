"""The canonical landing schema: what a shop's event pipeline lands each day, table by table.

This module is the single source of the data contract. The simulator writes it, the foreign
event-log mapping converts to it, ingestion validates against it and creates warehouse tables
from it, and the README documents it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EVENT_TYPES: tuple[str, ...] = (
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "view_cart",
    "begin_checkout",
    "shipping_quote_shown",
    "coupon_attempt",
    "recommendation_impression",
    "recommendation_click",
    "purchase",
)
# Events about one product must name it.
PRODUCT_EVENT_TYPES: tuple[str, ...] = (
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "recommendation_click",
)
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet", "unknown")
TRAFFIC_SOURCES: tuple[str, ...] = ("direct", "search", "email", "social", "ads", "unknown")
WEIGHT_CLASSES: tuple[str, ...] = ("small", "medium", "large", "bulky")
TREATMENTS: tuple[str, ...] = (
    "control",
    "reminder_email",
    "free_shipping",
    "discount_5",
    "discount_10",
)
# Who chose a logged arm: the shop's randomised experiment, the daily plan, the plan's
# exploration, the persistent holdout, or the scoring service.
CHOOSERS: tuple[str, ...] = ("experiment", "plan", "exploration", "holdout", "api")
# Pseudonymised at ingestion: the raw value never reaches a warehouse table.
PERSONAL_ID_COLUMNS: tuple[str, ...] = ("customer_id",)
# Ids that name a data subject or link a row to one: their values stay in the warehouse (where
# erasure finds them) and never go into a Dagster run's metadata, which erasure cannot reach.
SUBJECT_LINKED_COLUMNS: tuple[str, ...] = (
    *PERSONAL_ID_COLUMNS,
    "session_id",
    "event_id",
    "review_id",
)


@dataclass(frozen=True)
class Column:
    """One landed field: its warehouse type, whether it is required, and what it means."""

    name: str
    sql_type: str
    required: bool = False
    description: str = ""
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class Reference:
    """A foreign key: `column` must name a row of raw table `table` (same or earlier partition)."""

    column: str
    table: str
    target_column: str
    same_partition: bool = False
    rule: str = "unknown_reference"


@dataclass(frozen=True)
class TableSpec:
    """A landed table: its columns, key, landing format and row-level references."""

    name: str
    description: str
    landing_format: str  # "jsonl" or "parquet"
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str | None = None
    references: tuple[Reference, ...] = ()
    # A key may land again in a later partition (an update) only for mutable dimensions.
    key_unique_across_partitions: bool = True
    depends_on: tuple[str, ...] = field(default=())

    @property
    def raw_table(self) -> str:
        return f"raw_{self.name}"

    @property
    def quarantine_table(self) -> str:
        return f"quarantined_{self.name}"

    @property
    def landing_file(self) -> str:
        return f"{self.name}.{self.landing_format}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


CUSTOMERS = TableSpec(
    name="customers",
    description="New or updated customer records (first partition: the existing base).",
    landing_format="parquet",
    columns=(
        Column("customer_id", "VARCHAR", True, "Shop's customer id (pseudonymised at ingestion)"),
        Column("region", "VARCHAR", True, "Sales region code"),
        Column("signup_date", "DATE", True, "Account creation date"),
        Column("marketing_consent", "BOOLEAN", True, "Opted in to marketing contact"),
        Column("preferred_device", "VARCHAR", False, "Most used device", allowed=DEVICES),
    ),
    key=("customer_id",),
    key_unique_across_partitions=False,
)

PRODUCTS = TableSpec(
    name="products",
    description="Daily catalogue snapshot with that day's price (the price history).",
    landing_format="parquet",
    columns=(
        Column("product_id", "VARCHAR", True, "Product id"),
        Column("category", "VARCHAR", True, "Product category"),
        Column("brand", "VARCHAR", False, "Brand"),
        # Prices and shipping class may be unknown for products only seen in a foreign event log.
        Column("list_price", "DOUBLE", False, "Regular price", min_value=0.0),
        Column("price", "DOUBLE", False, "Price charged that day", min_value=0.0),
        Column("on_promotion", "BOOLEAN", False, "A promotion is running that day"),
        Column("weight_class", "VARCHAR", False, "Shipping class", allowed=WEIGHT_CLASSES),
    ),
    key=("product_id",),
    key_unique_across_partitions=False,
)

SHIPPING_QUOTES = TableSpec(
    name="shipping_quotes",
    description="Shipping cost and delivery time offered per region and weight class that day.",
    landing_format="parquet",
    columns=(
        Column("region", "VARCHAR", True, "Sales region code"),
        Column("weight_class", "VARCHAR", True, "Shipping class", allowed=WEIGHT_CLASSES),
        Column("shipping_cost", "DOUBLE", True, "Quoted shipping cost", min_value=0.0),
        Column("delivery_days", "INTEGER", True, "Quoted delivery time", min_value=0, max_value=60),
    ),
    key=("region", "weight_class"),
    key_unique_across_partitions=False,
)

SESSIONS = TableSpec(
    name="sessions",
    description="Web/app sessions starting that day.",
    landing_format="parquet",
    columns=(
        Column("session_id", "VARCHAR", True, "Session id"),
        Column("customer_id", "VARCHAR", True, "Shop's customer id (pseudonymised at ingestion)"),
        Column("started_at", "TIMESTAMP", True, "Session start, UTC"),
        Column("device", "VARCHAR", True, "Device", allowed=DEVICES),
        Column("traffic_source", "VARCHAR", True, "Acquisition channel", allowed=TRAFFIC_SOURCES),
        Column("region", "VARCHAR", True, "Sales region code"),
    ),
    key=("session_id",),
    time_column="started_at",
    references=(Reference("customer_id", "customers", "customer_id", rule="unknown_customer"),),
    depends_on=("customers",),
)

EVENTS = TableSpec(
    name="events",
    description="Ordered behavioural events of the sessions starting that day.",
    landing_format="jsonl",
    columns=(
        Column("event_id", "VARCHAR", True, "Event id"),
        Column("session_id", "VARCHAR", True, "Session the event belongs to"),
        Column("seq", "INTEGER", True, "Position of the event in its session", min_value=0),
        Column("ts", "TIMESTAMP", True, "Event time, UTC"),
        Column("event_type", "VARCHAR", True, "What happened", allowed=EVENT_TYPES),
        Column("product_id", "VARCHAR", False, "Product (required for product events)"),
        Column("quantity", "INTEGER", False, "Units", min_value=1, max_value=100),
        Column("price", "DOUBLE", False, "Unit price shown/charged", min_value=0.0),
        Column("shipping_cost", "DOUBLE", False, "Shipping quoted", min_value=0.0),
        Column("delivery_days", "INTEGER", False, "Delivery days quoted", min_value=0),
        Column("coupon_code", "VARCHAR", False, "Coupon code attempted"),
        Column("order_value", "DOUBLE", False, "Order total on purchase", min_value=0.0),
    ),
    key=("event_id",),
    time_column="ts",
    references=(
        Reference("session_id", "sessions", "session_id", True, rule="unknown_session"),
        Reference("product_id", "products", "product_id", True, rule="unknown_product"),
    ),
    depends_on=("sessions", "products"),
)

REVIEWS = TableSpec(
    name="reviews",
    description="Product reviews written that day.",
    landing_format="jsonl",
    columns=(
        Column("review_id", "VARCHAR", True, "Review id"),
        Column("product_id", "VARCHAR", True, "Reviewed product"),
        Column("customer_id", "VARCHAR", True, "Reviewer (pseudonymised at ingestion)"),
        Column("ts", "TIMESTAMP", True, "Review time, UTC"),
        Column("rating", "INTEGER", True, "Stars", min_value=1, max_value=5),
        Column("text", "VARCHAR", False, "Review text"),
    ),
    key=("review_id",),
    time_column="ts",
    references=(
        Reference("product_id", "products", "product_id", rule="unknown_product"),
        Reference("customer_id", "customers", "customer_id", rule="unknown_customer"),
    ),
    depends_on=("products", "customers"),
)

INTERVENTIONS = TableSpec(
    name="interventions",
    description=(
        "Intervention log: decided abandoned carts of consenting customers, the arm each got, who"
        " chose it (the shop's randomised experiment, the plan, its exploration, the holdout or"
        " the scoring service) with what propensity, its cost and the 7-day outcome (exported"
        " once it closed)."
    ),
    landing_format="parquet",
    columns=(
        Column("assignment_id", "VARCHAR", True, "Assignment id"),
        Column("session_id", "VARCHAR", True, "Abandoned cart session"),
        Column("customer_id", "VARCHAR", True, "Customer (pseudonymised at ingestion)"),
        Column("assigned_at", "TIMESTAMP", True, "Assignment time, UTC"),
        Column("treatment", "VARCHAR", True, "Arm", allowed=TREATMENTS),
        Column("cost", "DOUBLE", True, "Cost incurred", min_value=0.0),
        Column("converted_7d", "BOOLEAN", True, "Bought the cart within 7 days"),
        Column("revenue_7d", "DOUBLE", True, "Revenue within 7 days", min_value=0.0),
        Column(
            "chosen_by",
            "VARCHAR",
            False,
            "Who chose the arm",
            allowed=CHOOSERS,
        ),
        Column(
            "propensity",
            "DOUBLE",
            False,
            "Chance the chosen arm had of being chosen (empty: the arm's share of the log)",
            min_value=1e-9,
            max_value=1.0,
        ),
        Column("policy_version", "VARCHAR", False, "Plan run or policy that chose the arm"),
        Column("model_version", "VARCHAR", False, "cartintel-uplift version behind the choice"),
    ),
    key=("assignment_id",),
    time_column="assigned_at",
    references=(
        Reference("session_id", "sessions", "session_id", rule="unknown_session"),
        Reference("customer_id", "customers", "customer_id", rule="unknown_customer"),
    ),
    depends_on=("sessions", "customers"),
)

# In dependency order: a table's references point only at tables before it.
TABLES: tuple[TableSpec, ...] = (
    CUSTOMERS,
    PRODUCTS,
    SHIPPING_QUOTES,
    SESSIONS,
    EVENTS,
    REVIEWS,
    INTERVENTIONS,
)
TABLES_BY_NAME: dict[str, TableSpec] = {t.name: t for t in TABLES}
