"""`clickrec generate`: a synthetic shop's clickstream in the REES46 schema, with planted structure.

What is planted, so that a personalised model can beat a popularity list:

- items belong to categories (with codes, brands and log-normal prices); within a category,
  item popularity is Zipf-like;
- every user has latent tastes over categories (a sparse Dirichlet draw), and most of a user's
  events fall in the categories they like; a `noise` share of views goes to globally popular
  items instead (what a popularity list captures);
- users browse in sessions (geometric length, log-normal seconds between events, longer looks
  at items of the user's favourite category, so dwell carries signal too);
- views lead to carts and carts to purchases (or removals) through a funnel;
- a small share of rows is repeated exactly, as at-least-once log shippers do, to exercise
  deduplication.

Everything is vectorised with numpy and written with pyarrow, deterministic for a seed; 10M
events take well under a minute. Output: CSV (`.csv`, `.csv.gz`) or JSON lines (`.jsonl`,
`.json`, optionally `.gz`), chosen by the file name.
"""

from __future__ import annotations

import gzip
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from clickrec import columns as C
from clickrec.config import GenerateConfig
from clickrec.errors import InputError

log = logging.getLogger(__name__)

_TOPS = ("electronics", "appliances", "computers", "apparel", "furniture", "kids", "sport",
         "auto", "construction", "accessories", "country_yard", "medicine", "stationery")
_SUBS = ("smartphone", "tablet", "audio", "video", "kitchen", "clocks", "camera", "notebook",
         "desktop", "shoes", "bag", "chair", "bed", "toys", "bicycle", "tools", "light",
         "watch", "headphone", "printer", "washer", "vacuum", "iron", "umbrella", "carpet")
_BRANDS = ("samsung", "apple", "xiaomi", "huawei", "lg", "bosch", "sony", "lenovo", "hp",
           "acer", "asus", "indesit", "philips", "nike", "adidas", "puma", "casio", "canon",
           "oppo", "redmond", "tefal", "vitek", "polaris", "beko", "haier", "elenberg")
_EVENT_TYPES = np.array(C.EVENT_TYPES)  # view, cart, remove_from_cart, purchase
CART_RATE = 0.07  # views that lead to a cart
PURCHASE_RATE = 0.45  # carts that lead to a purchase
REMOVE_RATE = 0.2  # carts (not purchased) that are removed
DUPLICATE_RATE = 0.002  # rows repeated exactly
_CHUNK = 200_000


def _output_kind(out: Path) -> tuple[str, bool]:
    name = out.name.lower()
    gz = name.endswith(".gz")
    base = name.removesuffix(".gz")
    if base.endswith((".jsonl", ".json", ".ndjson")):
        return "json", gz
    if base.endswith(".csv"):
        return "csv", gz
    raise InputError(f"--out {out}: name it *.csv, *.csv.gz, *.jsonl or *.jsonl.gz")


def _uuid_strings(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random UUID-looking strings (8-4-4-4-12 hex), vectorised."""
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype="S1")
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    digits = np.empty((n, 32), dtype="S1")
    digits[:, 0::2] = hex_digits[raw >> 4]
    digits[:, 1::2] = hex_digits[raw & 15]
    dash = np.full((n, 1), b"-", dtype="S1")
    parts = [digits[:, 0:8], dash, digits[:, 8:12], dash, digits[:, 12:16], dash,
             digits[:, 16:20], dash, digits[:, 20:32]]
    return np.ascontiguousarray(np.hstack(parts)).view("S36").ravel()


def _sample_rows(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each r in `rows`, draw a column from the row's cumulative distribution cum[r]."""
    out = np.empty(len(rows), dtype=np.int32)
    for start in range(0, len(rows), _CHUNK):
        block = cum[rows[start:start + _CHUNK]]
        u = rng.random(len(block))[:, None]
        out[start:start + _CHUNK] = np.minimum((block < u).sum(axis=1), cum.shape[1] - 1)
    return out


def _catalogue(rng: np.random.Generator, n_items: int, n_cats: int) -> dict[str, np.ndarray]:
    """Categories (id, code), items (category, brand, price, popularity)."""
    cat_ids = 2053013552226107603 + np.arange(n_cats, dtype=np.int64) * 1_000_003
    codes = np.array([f"{_TOPS[c % len(_TOPS)]}.{_SUBS[(c * 7 + c // len(_TOPS)) % len(_SUBS)]}"
                      for c in range(n_cats)], dtype=object)
    codes[rng.random(n_cats) < 0.1] = None  # like REES46, some categories have no code
    cat_size = rng.dirichlet(np.full(n_cats, 2.0))
    item_cat = rng.choice(n_cats, size=n_items, p=cat_size).astype(np.int32)
    # Zipf-like popularity within each category (rank by a random permutation)
    rank = np.empty(n_items, dtype=np.float64)
    order = np.argsort(item_cat, kind="stable")
    sorted_cats = item_cat[order]
    starts = np.searchsorted(sorted_cats, np.arange(n_cats))
    within = np.arange(n_items) - starts[sorted_cats]
    rank[order] = within + 1.0
    weight = 1.0 / rank**1.1
    base_price = rng.lognormal(3.5, 1.0, n_cats)
    price = np.round(base_price[item_cat] * rng.lognormal(0.0, 0.35, n_items), 2)
    brand_pool = np.array(list(_BRANDS) + [f"brand{i}" for i in range(200)], dtype=object)
    cat_brands = rng.integers(0, len(brand_pool), size=(n_cats, 6))
    brand = brand_pool[cat_brands[item_cat, rng.integers(0, 6, n_items)]]
    brand[rng.random(n_items) < 0.15] = None
    return {"cat_ids": cat_ids, "codes": codes, "item_cat": item_cat, "weight": weight,
            "price": price, "brand": brand, "order": order, "sorted_cats": sorted_cats}


def generate_clickstream(
    out: str | Path, *, events: int, seed: int | None = None, settings: GenerateConfig | None = None
) -> dict[str, Any]:
    """Write `events` synthetic REES46 rows to `out`; return a summary dict.

    Deterministic for (events, seed, settings). Raises InputError for a bad count or file name.
    """
    started = time.monotonic()
    cfg = settings or GenerateConfig()
    seed = cfg.seed if seed is None else seed
    if events < 1:
        raise InputError(f"--events {events}: must be at least 1")
    out = Path(out)
    kind, gz = _output_kind(out)
    rng = np.random.default_rng(seed)
    n_users = max(10, round(events / cfg.events_per_user))
    n_items = max(20, round(events / cfg.events_per_item))
    n_cats = max(2, min(cfg.categories, n_items // 5))
    cat = _catalogue(rng, n_items, n_cats)

    # users: activity and sparse tastes over categories
    activity = rng.lognormal(0.0, 1.0, n_users)
    activity /= activity.sum()
    taste = rng.dirichlet(np.full(n_cats, cfg.taste_concentration), size=n_users)
    favourite = taste.argmax(axis=1)
    taste_cum = np.cumsum(taste, axis=1)

    # sessions: as many views as events; with the funnel's rows on top there are more than
    # `events` rows, and the latest ones are cut so the count is exact
    n_views_target = events
    lengths = rng.geometric(1.0 / cfg.mean_session_events, int(n_views_target / cfg.mean_session_events * 1.2) + 10)
    ends = np.cumsum(lengths)
    n_sessions = int(np.searchsorted(ends, n_views_target) + 1)
    lengths = lengths[:n_sessions]
    n_views = int(lengths.sum())
    session_user = rng.choice(n_users, size=n_sessions, p=activity).astype(np.int32)
    span = cfg.days * 86_400
    start_epoch = int(datetime.fromisoformat(cfg.start).replace(tzinfo=UTC).timestamp())
    session_start = start_epoch + rng.integers(0, span, n_sessions)

    # views: category from the user's tastes, item Zipf within it (or a popular item: noise)
    v_session = np.repeat(np.arange(n_sessions, dtype=np.int32), lengths)
    v_user = session_user[v_session]
    v_cat = _sample_rows(rng, taste_cum, v_user)
    keys = cat["sorted_cats"] + np.concatenate(
        [np.cumsum(w) / w.sum() for w in np.split(cat["weight"][cat["order"]], np.searchsorted(cat["sorted_cats"], np.arange(1, n_cats)))]
    )
    pos = np.searchsorted(keys, v_cat + rng.random(n_views), side="right")
    v_item = cat["order"][np.minimum(pos, n_items - 1)]
    noisy = rng.random(n_views) < cfg.noise
    global_cum = np.cumsum(cat["weight"]) / cat["weight"].sum()
    v_item[noisy] = np.minimum(np.searchsorted(global_cum, rng.random(int(noisy.sum())), side="right"), n_items - 1)
    liked = (cat["item_cat"][v_item] == favourite[v_user]).astype(np.float64)
    gaps = np.ceil(rng.lognormal(np.log(20.0) + 0.9 * liked, 0.9)).astype(np.int64)
    first = np.zeros(n_views, dtype=bool)
    first[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    gaps[first] = 0
    cs = np.cumsum(gaps)
    offsets = cs - np.repeat(cs[first], lengths)
    v_time = session_start[v_session] + offsets

    # funnel: view -> cart -> purchase | remove_from_cart (likelier for liked items)
    carted = rng.random(n_views) < CART_RATE * (0.5 + liked)
    c_idx = np.flatnonzero(carted)
    c_time = v_time[c_idx] + np.ceil(rng.lognormal(np.log(8.0), 0.5, len(c_idx))).astype(np.int64)
    bought = rng.random(len(c_idx)) < PURCHASE_RATE
    p_idx = c_idx[bought]
    p_time = c_time[bought] + np.ceil(rng.lognormal(np.log(60.0), 0.7, len(p_idx))).astype(np.int64)
    removed = ~bought & (rng.random(len(c_idx)) < REMOVE_RATE)
    r_idx = c_idx[removed]
    r_time = c_time[removed] + np.ceil(rng.lognormal(np.log(30.0), 0.7, len(r_idx))).astype(np.int64)

    src = np.concatenate([np.arange(n_views), c_idx, p_idx, r_idx])
    etype = np.concatenate([np.zeros(n_views, np.int8), np.ones(len(c_idx), np.int8),
                            np.full(len(p_idx), 3, np.int8), np.full(len(r_idx), 2, np.int8)])
    etime = np.concatenate([v_time, c_time, p_time, r_time])
    order = np.lexsort((etype, v_session[src], etime))[:events]
    src, etype, etime = src[order], etype[order], etime[order]
    # exact repeats of a few rows (what at-least-once shippers produce), same total count
    n_dup = int(len(src) * DUPLICATE_RATE)
    if n_dup:
        target = rng.choice(np.arange(1, len(src)), size=n_dup, replace=False)
        src[target], etype[target], etime[target] = src[target - 1], etype[target - 1], etime[target - 1]
    item = v_item[src]
    session = v_session[src]
    user = v_user[src]
    summary = _write(out, kind, gz, rng=rng, n_sessions=n_sessions, cat=cat, etime=etime,
                     etype=etype, item=item, user=user, session=session)
    summary.update({
        "events": len(src), "users": len(np.unique(user)), "items": len(np.unique(item)),
        "categories": n_cats, "sessions": len(np.unique(session)), "repeated_rows": n_dup,
        "seed": seed, "seconds": round(time.monotonic() - started, 3),
    })
    log.info("generated %d events into %s", summary["events"], out)
    return summary


def _write(out: Path, kind: str, gz: bool, *, rng: np.random.Generator, n_sessions: int,
           cat: dict[str, np.ndarray], etime: np.ndarray, etype: np.ndarray, item: np.ndarray,
           user: np.ndarray, session: np.ndarray) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    session_ids = pa.array(_uuid_strings(rng, n_sessions).astype(str))
    item_cat = cat["item_cat"][item]
    ts = pa.array(etime.astype("datetime64[s]"))
    table = pa.table({
        C.EVENT_TIME: pc.strftime(ts, format="%Y-%m-%d %H:%M:%S UTC"),
        C.EVENT_TYPE: pa.DictionaryArray.from_arrays(pa.array(etype), pa.array(list(C.EVENT_TYPES))).cast(pa.string()),
        C.PRODUCT_ID: pa.array(1_000_000 + item.astype(np.int64)),
        C.CATEGORY_ID: pa.array(cat["cat_ids"][item_cat]),
        C.CATEGORY_CODE: pa.array(cat["codes"][item_cat], type=pa.string()),
        C.BRAND: pa.array(cat["brand"][item], type=pa.string()),
        C.PRICE: pa.array(cat["price"][item]),
        C.USER_ID: pa.array(512_000_000 + user.astype(np.int64)),
        C.USER_SESSION: pa.DictionaryArray.from_arrays(pa.array(session), session_ids).cast(pa.string()),
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    opener = gzip.open if gz else open
    with opener(tmp, "wb") as sink:
        if kind == "csv":
            sink.write((",".join(C.REES46_COLUMNS) + "\n").encode())
            pcsv.write_csv(table, sink, pcsv.WriteOptions(include_header=False, quoting_style="none"))
        else:
            sink.write(table.to_pandas().to_json(orient="records", lines=True).encode())
    tmp.replace(out)  # never leave a half-written file under the final name
    return {"out": str(out), "format": kind + (".gz" if gz else ""), "bytes": out.stat().st_size}
