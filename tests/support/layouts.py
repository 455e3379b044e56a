"""The same small clickstream written in each layout of conf/examples/, and what it must become.

`EVENTS` are canonical events (user, session, item, type, epoch seconds); `write_layout` writes
them as one example layout expects its files, plus one row the layout must quarantine. The
expectations are computed here in plain Python, not by clickrec.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from clickrec.config import ClickrecConfig, build_config, load_config
from tests.support.config import REPO_ROOT, make_config

EXAMPLES = REPO_ROOT / "conf" / "examples"
LAYOUTS = ("session_clicks", "retailrocket", "renamed_columns")
T0 = 1_570_000_000  # 2019-10-02 07:06:40 UTC


@dataclass(frozen=True)
class Event:
    user: str
    session: str
    item: str
    kind: str  # clickrec's event type
    seconds: int

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.seconds, UTC).replace(tzinfo=None)


def _events(*, views_only: bool, session_is_user: bool) -> list[Event]:
    kinds = ("view", "view", "cart", "view", "purchase")
    out = []
    for n in range(24):
        user = f"u{n % 4}"
        session = user if session_is_user else f"{user}-s{n % 2}"
        kind = "view" if views_only else kinds[n % len(kinds)]
        out.append(Event(user, session, f"{100 + n % 5}", kind, T0 + 37 * n))
    return out


def events_of(layout: str) -> list[Event]:
    """The events written for `layout` (a session-only log has no users and no event types)."""
    return _events(views_only=layout == "session_clicks", session_is_user=layout != "renamed_columns")


def write_layout(layout: str, path: Path) -> tuple[list[Event], str]:
    """Write `layout`'s file at `path`; (the events it holds, the reason its one bad row gets)."""
    events = events_of(layout)
    if layout == "session_clicks":  # session<TAB>item<TAB>epoch seconds, no header
        rows = [f"{e.session}\t{e.item}\t{e.seconds}" for e in events] + ["u9\t100\tyesterday"]
        path.write_text("\n".join(rows) + "\n")
        return events, "event_time_invalid"
    if layout == "retailrocket":  # epoch ms, addtocart / transaction, a transaction id column
        names = {"view": "view", "cart": "addtocart", "purchase": "transaction"}
        rows = ["timestamp,visitorid,event,itemid,transactionid"]
        rows += [f"{e.seconds * 1000},{e.user},{names[e.kind]},{e.item},{'7' if e.kind == 'purchase' else ''}"
                 for e in events]
        rows.append(f"{T0 * 1000},u9,wishlist,100,")
        path.write_text("\n".join(rows) + "\n")
        return events, "event_type_unknown"
    if layout == "renamed_columns":  # its own header and event names, ';', ISO times at +02:00
        names = {"view": "page_view", "cart": "add_to_basket", "purchase": "order"}
        cest = timezone(timedelta(hours=2))

        def iso(seconds: int) -> str:
            return datetime.fromtimestamp(seconds, cest).isoformat()

        rows = ["ts;customer;session;action;sku;category;brand_name;amount"]
        rows += [f"{iso(e.seconds)};{e.user};{e.session};{names[e.kind]};{e.item};shoes;acme;59.90" for e in events]
        rows.append(f"{iso(T0)};u9;u9-s0;page_view;100;shoes;acme;NaN")
        path.write_text("\n".join(rows) + "\n")
        return events, "price_not_finite"
    raise ValueError(f"unknown layout {layout}")


def layout_config(layout: str, tmp: Path, **sections: dict) -> ClickrecConfig:
    """The example's ingest section on the tests' usual config (lake and MLflow under `tmp`)."""
    example = load_config(EXAMPLES / f"{layout}.yaml").ingest.model_dump(mode="json")
    base = make_config(tmp, **sections).model_dump(mode="json")
    base["ingest"] = {**example, **sections.get("ingest", {})}
    return build_config(base)


def expected_bronze(events: list[Event]) -> Counter[tuple[str, str, str, str, datetime]]:
    """(user_id, user_session, product_id, event_type, event_time) of each event."""
    return Counter((e.user, e.session, e.item, e.kind, e.time) for e in events)


def expected_counts(events: list[Event]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(views, carts, purchases) per (user, item)."""
    counts: dict[tuple[str, str], list[int]] = {}
    for e in events:
        c = counts.setdefault((e.user, e.item), [0, 0, 0])
        c[("view", "cart", "purchase").index(e.kind)] += 1
    return {k: (v[0], v[1], v[2]) for k, v in counts.items()}
