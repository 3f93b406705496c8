"""The intervention catalogue and its linter: what can be sent, what it costs, and the refusal of
manipulative designs (false urgency, false scarcity, sneaking, confirmshaming)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cartintel_assets.contracts.schema import TREATMENTS
from cartintel_assets.models.uplift import CONTROL

DEFAULT_CATALOGUE = Path(__file__).resolve().parents[1] / "catalogues" / "interventions.yaml"
NONE = "none"

_URGENCY = re.compile(
    r"\b(hurry|last chance|ends (soon|today|tonight)|only today|today only|expires? (soon|today)"
    r"|don'?t miss|act now|before it'?s gone|countdown|time is running out)\b",
    re.IGNORECASE,
)
_SCARCITY = re.compile(
    r"\b(only \d+ left|\d+ left in stock|low stock|almost (gone|sold out)|selling fast"
    r"|limited stock|few left|nearly sold out)\b",
    re.IGNORECASE,
)
_SHAMING = re.compile(
    r"\b(no thanks,? i (don'?t|do not) (like|want|need) (saving|savings|deals|discounts|money)"
    r"|i (prefer|like) (paying|to pay) full price|i'?m not interested in saving)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AddOn:
    name: str
    price: float
    pre_checked: bool = False


@dataclass(frozen=True)
class Intervention:
    """One entry of the catalogue: what is sent, what it costs and the claims it makes."""

    id: str
    arm: str
    channel: str
    send_cost: float
    subject: str
    body: str
    discount: float = 0.0
    free_shipping: bool = False
    expires_hours: float | None = None  # a real, enforced expiry of the offer
    countdown: bool = False  # shows a countdown to the expiry
    timer_resets: bool = False  # the countdown restarts (for each visit or email)
    scarcity_claim: bool = False  # claims limited stock
    inventory_backed: bool = False  # the stock claim is computed from live inventory
    add_ons: tuple[AddOn, ...] = ()
    decline_text: str = ""


@dataclass(frozen=True)
class Finding:
    """A manipulative design the linter refuses, by FTC dark-pattern category."""

    intervention: str
    rule: str
    detail: str


def lint_intervention(item: Intervention) -> list[Finding]:
    """Every manipulative pattern in one catalogue entry (empty when it is honest)."""
    text = f"{item.subject}\n{item.body}"
    out: list[Finding] = []

    def flag(rule: str, detail: str) -> None:
        out.append(Finding(item.id, rule, detail))

    if item.countdown and item.expires_hours is None:
        flag("false_urgency", "a countdown without a real expiry of the offer")
    if item.timer_resets:
        flag("false_urgency", "a timer that resets")
    if (m := _URGENCY.search(text)) and item.expires_hours is None:
        flag("false_urgency", f"urgency wording {m.group(0)!r} without a real expiry")
    if item.scarcity_claim and not item.inventory_backed:
        flag("false_scarcity", "a low-stock claim not backed by inventory")
    if (m := _SCARCITY.search(text)) and not item.inventory_backed:
        flag("false_scarcity", f"scarcity wording {m.group(0)!r} not backed by inventory")
    for add_on in item.add_ons:
        if add_on.pre_checked:
            flag("sneaking", f"the add-on {add_on.name!r} is pre-checked")
    if m := _SHAMING.search(item.decline_text):
        flag("confirmshaming", f"the decline option shames: {m.group(0)!r}")
    return out


class ManipulativeDesignError(ValueError):
    """The catalogue holds at least one manipulative design; nothing is planned from it."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        lines = "; ".join(f"{f.intervention}: {f.rule} ({f.detail})" for f in findings)
        super().__init__(f"the intervention catalogue is refused: {lines}")


def parse_catalogue(doc: dict[str, Any], source: str = "catalogue") -> list[Intervention]:
    """Validate a catalogue document and lint every entry; manipulative designs are refused."""
    items = doc.get("interventions") if isinstance(doc, dict) else None
    if not items:
        raise ValueError(f"{source}: expected a non-empty list under 'interventions'")
    known = set(Intervention.__dataclass_fields__)
    out: list[Intervention] = []
    for raw in items:
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"{source}: entry {raw.get('id')!r} has unknown fields {sorted(unknown)}"
            )
        add_ons = tuple(AddOn(**a) for a in raw.get("add_ons") or ())
        item = Intervention(**{**raw, "add_ons": add_ons})
        if item.arm not in TREATMENTS or item.arm == CONTROL:
            raise ValueError(
                f"{source}: {item.id} names arm {item.arm!r}; expected one of {TREATMENTS[1:]}"
            )
        if not 0 <= item.discount < 1 or item.send_cost < 0:
            raise ValueError(f"{source}: {item.id} needs 0 <= discount < 1 and send_cost >= 0")
        out.append(item)
    ids = [i.id for i in out]
    if len(set(ids)) != len(ids) or len({i.arm for i in out}) != len(out):
        raise ValueError(f"{source}: ids and arms must be unique (one entry per arm)")
    findings = [f for item in out for f in lint_intervention(item)]
    if findings:
        raise ManipulativeDesignError(findings)
    return out


def load_catalogue(path: Path | str = DEFAULT_CATALOGUE) -> list[Intervention]:
    return parse_catalogue(yaml.safe_load(Path(path).read_text()), str(path))
