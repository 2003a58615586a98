"""A deterministic simulator of the shop: users, their visits, carts, orders, refunds, tickets.

Behind the events runs a hidden churn process, recorded in ``Simulation.churn_times``.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from dataclasses import dataclass
from itertools import accumulate

DAY = 86_400.0
STREAMS = (
    "signups",
    "sessions",
    "page_views",
    "cart_events",
    "purchases",
    "refunds",
    "support_tickets",
)
CATALOG_SIZE = 500

# Relative traffic per hour of the (UTC) day: quiet nights, busy evenings.
_HOURLY = (
    0.30,
    0.20,
    0.15,
    0.10,
    0.10,
    0.15,
    0.30,
    0.50,
    0.70,
    0.80,
    0.85,
    0.90,
    1.00,
    0.95,
    0.90,
    0.90,
    0.95,
    1.10,
    1.40,
    1.70,
    1.90,
    1.80,
    1.30,
    0.70,
)
_HOURLY_MAX = max(_HOURLY)
_COUNTRIES = (
    ("US", 38),
    ("GB", 12),
    ("DE", 11),
    ("FR", 9),
    ("CA", 7),
    ("NL", 5),
    ("ES", 5),
    ("IT", 5),
    ("AU", 4),
    ("SE", 2),
    ("PL", 2),
)
_CHANNELS = (("organic", 40), ("ads", 25), ("referral", 12), ("email", 13), ("social", 10))
_DEVICES = ("mobile", "desktop", "tablet")
# payment method -> base probability that a payment attempt fails
_PAYMENT_FAIL = {"card": 0.055, "paypal": 0.04, "apple_pay": 0.03, "gift_card": 0.08}
_PAYMENTS = (("card", 55), ("paypal", 25), ("apple_pay", 15), ("gift_card", 5))
_REFUND_REASONS = ("damaged", "not_as_described", "late_delivery", "changed_mind", "wrong_size")
_BACKGROUND_TICKETS = ("account", "product_question", "other")
# How much each bad experience adds to a user's (daily decaying) frustration score.
_W_FAILED, _W_REFUND, _W_TICKET = 1.0, 1.2, 0.5


@dataclass
class Simulation:
    """Generated events per stream (sorted by ``ts``) and the hidden truth behind them."""

    events: dict[str, list[dict]]
    churn_times: dict[str, float]
    users: list[str]

    def counts(self) -> dict[str, int]:
        """Number of events per stream."""
        return {name: len(evs) for name, evs in self.events.items()}


def _cum(pairs: tuple[tuple[str, int], ...]) -> tuple[list[str], list[float]]:
    return [p[0] for p in pairs], list(accumulate(float(p[1]) for p in pairs))


class _World:
    """Shared state of one run: the catalog, the id counters and the output rows."""

    def __init__(self, rng: random.Random, start: float, end: float, drift: float) -> None:
        self.rng, self.start, self.end, self.drift = rng, start, end, drift
        self.drift_from = start + (end - start) * 2.0 / 3.0
        # Catalog: log-normal prices ending in .99; Zipf-like popularity over a shuffled order.
        self.items = [f"it-{i:04d}" for i in range(CATALOG_SIZE)]
        self.prices = [
            max(1.99, round(math.exp(rng.gauss(3.2, 0.75))) - 0.01) for _ in range(CATALOG_SIZE)
        ]
        ranks = list(range(CATALOG_SIZE))
        rng.shuffle(ranks)
        weights = [1.0 / (ranks[i] + 1) ** 1.07 for i in range(CATALOG_SIZE)]
        self.item_cum = list(accumulate(weights))
        self.session_n = self.order_n = self.ticket_n = 0
        self.rows: dict[str, list[tuple]] = {name: [] for name in STREAMS}

    def pick_item(self) -> int:
        cum = self.item_cum
        return min(bisect(cum, self.rng.random() * cum[-1]), CATALOG_SIZE - 1)

    def drifted(self, t: float) -> float:
        """How far drift applies at time ``t``: ``drift`` in the last third, else 0."""
        return self.drift if t >= self.drift_from else 0.0


class _User:
    __slots__ = (
        "uid",
        "rate",
        "sens",
        "patience",
        "device",
        "payment",
        "veteran",
        "signup",
        "cart",
        "score",
        "daily",
        "pending",
        "seq",
    )

    def __init__(self, uid: str, rng: random.Random, signup: float, veteran: bool) -> None:
        self.uid = uid
        self.rate = min(6.0, math.exp(rng.gauss(-0.35, 0.8)))  # sessions per day
        self.sens = rng.random()  # price sensitivity
        self.patience = rng.betavariate(2.5, 2.0)
        r = rng.random()
        self.device = _DEVICES[0 if r < 0.58 else 1 if r < 0.9 else 2]
        self.payment = ""
        self.veteran = veteran
        self.signup = signup
        self.cart: list[list] = []  # [item index, quantity, unit price]
        self.score = 0.0  # frustration from recent bad experiences
        self.daily: list[int] = []  # sessions per simulated day
        self.pending: list[tuple] = []  # heap of future (ts, seq, kind, data)
        self.seq = 0

    def schedule(self, ts: float, kind: str, data: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (ts, self.seq, kind, data))


def simulate(
    *, users: int = 2000, days: int = 28, end: float, seed: int = 7, drift: float = 0.0
) -> Simulation:
    """Simulate ``users`` shoppers over ``days`` days ending at ``end`` (epoch seconds, UTC).

    All events fall in [end - days*86400, end). ``drift`` in [0, 1] shifts behaviour in the
    last third of the period: more failed payments, higher prices, fewer visits.
    """
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be within [0, 1], got {drift!r}")
    if users < 0 or days <= 0:
        raise ValueError("users must be >= 0 and days > 0")
    rng = random.Random(seed)
    start = float(end) - days * DAY
    world = _World(rng, start, float(end), drift)
    countries, country_cum = _cum(_COUNTRIES)
    channels, channel_cum = _cum(_CHANNELS)
    methods, method_cum = _cum(_PAYMENTS)
    user_ids = [f"u-{i:06d}" for i in range(users)]
    churn_times: dict[str, float] = {}
    for uid in user_ids:
        veteran = rng.random() < 0.45
        # Existing customers' accounts appear in the first day; the others sign up later.
        span = DAY if veteran else days * DAY
        signup = round(start + rng.random() * min(span, days * DAY) * 0.999, 3)
        user = _User(uid, rng, signup, veteran)
        user.payment = rng.choices(methods, cum_weights=method_cum)[0]
        country = rng.choices(countries, cum_weights=country_cum)[0]
        channel = rng.choices(channels, cum_weights=channel_cum)[0]
        world.rows["signups"].append((signup, uid, f"{uid}@mail.example", country, channel))
        churned = _live(world, user, days)
        if churned is not None:
            churn_times[uid] = churned
    events = {name: _to_dicts(name, rows) for name, rows in world.rows.items()}
    return Simulation(events, churn_times, user_ids)


def _live(world: _World, user: _User, days: int) -> float | None:
    """Simulate one user's life from signup; returns the churn time, if they churned."""
    rng = world.rng
    rand = rng.random
    first_day = int((user.signup - world.start) // DAY)
    user.daily = [0] * days
    for d in range(first_day, days):
        day_start = world.start + d * DAY
        day_end = min(day_start + DAY, world.end)
        lower = max(day_start, user.signup)
        limit = day_end
        churn_at = None
        if d > first_day:
            user.score *= 0.88
            age = d - first_day
            recent = sum(user.daily[max(first_day, d - 7) : d]) * 7.0 / min(age, 7)
            engagement = 1.0 + 2.0 * math.exp(-recent / 2.0)
            hazard = 0.0035 * engagement + 0.03 * user.score * (1.6 - user.patience)
            if rand() < min(hazard, 0.6):
                churn_at = round(day_start + rand() * (day_end - day_start), 3)
                if churn_at <= lower:
                    churn_at = round(lower + 1.0, 3)
                limit = churn_at
        # Visits for the day: a Poisson count at a daily rhythm.
        novelty = 0.0 if user.veteran else 0.9 * math.exp(-(d - first_day) / 4.0)
        weekday = (int(day_start // DAY) + 3) % 7
        lam = user.rate * (1.0 + novelty) * (1.15 if weekday >= 5 else 1.0)
        lam *= 1.0 - 0.4 * world.drifted(day_start)
        lam *= (day_end - lower) / DAY
        times = [_session_time(rand, lower, day_end) for _ in range(_poisson(rand, lam))]
        if d == first_day and rand() < 0.8:
            times.append(user.signup + 5.0 + rand() * 60.0)  # the onboarding visit
        times.sort()
        busy_until = lower
        for t0 in times:
            t0 = max(t0, busy_until + 60.0)
            if t0 >= limit:
                break
            user.daily[d] += 1
            busy_until = _session(world, user, t0, limit)
        # Deferred consequences (refunds, tickets) that fall within today.
        pending = user.pending
        while pending and pending[0][0] < limit:
            ts, _, kind, data = heapq.heappop(pending)
            _emit_deferred(world, user, ts, kind, data)
        if churn_at is not None:
            return churn_at
    return None


def _poisson(rand, lam: float) -> int:
    if lam <= 0.0:
        return 0
    threshold, k, p = math.exp(-lam), 0, rand()
    while p > threshold:
        k += 1
        p *= rand()
    return k


def _session_time(rand, lower: float, upper: float) -> float:
    """A time in [lower, upper), denser in the evening (rejection sampling on the hour)."""
    for _ in range(20):
        t = lower + rand() * (upper - lower)
        if rand() * _HOURLY_MAX < _HOURLY[int(t % DAY) // 3600]:
            return t
    return t


def _session(world: _World, user: _User, t: float, limit: float) -> float:
    """One visit starting at ``t``; emits its events and returns when it ended."""
    rng, rows = world.rng, world.rows
    rand = rng.random
    world.session_n += 1
    sid = f"s-{world.session_n:07d}"
    uid = user.uid
    rows["sessions"].append((round(t, 3), sid, uid, user.device))
    pv, carts = rows["page_views"], rows["cart_events"]
    cart = user.cart
    price_up = 1.0 + 0.25 * world.drifted(t)
    r = rand()
    page = "home" if r < 0.55 else "search" if r < 0.8 else "product"
    if cart and rand() < 0.2:
        page = "cart"
    gap_mean = 20.0 + 40.0 * user.patience
    for _ in range(40):
        ts = round(t, 3)
        if ts >= limit:
            return t
        if page == "product":
            item = world.pick_item()
            pv.append((ts, uid, sid, "product", world.items[item]))
            price = round(world.prices[item] * price_up, 2)
            p_add = 0.3 * math.exp(-user.sens * price / 45.0)
            t += 5.0 + rand() * 40.0
            if rand() < p_add:
                ts = round(t, 3)
                if ts >= limit:
                    return t
                r = rand()
                qty = 1 if r < 0.84 else 2 if r < 0.96 else 3
                cart.append([item, qty, price])
                carts.append((ts, uid, world.items[item], "add", qty, price))
                r = rand()
                page = (
                    "cart" if r < 0.45 else "product" if r < 0.65 else ("search" if r < 0.8 else "")
                )
            else:
                r = rand()
                page = (
                    "product"
                    if r < 0.36
                    else "search"
                    if r < 0.6
                    else "home"
                    if (r < 0.65)
                    else "cart"
                    if (cart and r < 0.72)
                    else ""
                )
        else:
            pv.append((ts, uid, sid, page, None))
            r = rand()
            if page == "home":
                page = (
                    "search"
                    if r < 0.35
                    else "product"
                    if r < 0.75
                    else ("cart" if cart and r < 0.82 else "")
                )
            elif page == "search":
                page = "product" if r < 0.62 else "search" if r < 0.78 else ""
            elif page == "cart":
                if not cart:
                    page = "home" if r < 0.4 else ""
                elif r < 0.12 + 0.15 * user.sens:
                    t += 3.0 + rand() * 20.0
                    ts = round(t, 3)
                    if ts >= limit:
                        return t
                    item, qty, price = cart.pop(int(rand() * len(cart)))
                    carts.append((ts, uid, world.items[item], "remove", qty, price))
                    page = "cart" if cart and rand() < 0.3 else "product" if (rand() < 0.4) else ""
                else:
                    page = (
                        "checkout" if r < 0.6 - 0.3 * user.sens else ("product" if r < 0.75 else "")
                    )
            else:  # checkout
                t += 20.0 + rand() * 90.0
                if round(t, 3) >= limit:
                    return t
                paid = _pay(world, user, t)
                if paid:
                    page = "home" if rand() < 0.1 else ""
                else:
                    page = "checkout" if rand() < 0.25 + 0.5 * user.patience else ""
        if not page:
            break
        t += 3.0 + rng.expovariate(1.0 / gap_mean)
    if rand() < 0.004:  # questions and account trouble, unrelated to orders
        category = _BACKGROUND_TICKETS[int(rand() * 3)]
        user.schedule(t + 60.0 + rand() * 3 * 3600.0, "ticket", (category, 1))
    return t


def _pay(world: _World, user: _User, t: float) -> bool:
    """A payment attempt for the cart at ``t``; schedules its consequences."""
    rand = world.rng.random
    world.order_n += 1
    order_id = f"o-{world.order_n:07d}"
    amount = round(sum(qty * price for _, qty, price in user.cart), 2)
    n_items = sum(qty for _, qty, _ in user.cart)
    p_fail = _PAYMENT_FAIL[user.payment] * (1.0 + 3.0 * world.drifted(t))
    failed = rand() < p_fail
    status = "failed" if failed else "paid"
    world.rows["purchases"].append(
        (round(t, 3), order_id, user.uid, amount, n_items, status, user.payment)
    )
    if failed:
        user.score += _W_FAILED
        if rand() < 0.25 + 0.3 * (1.0 - user.patience):
            user.schedule(
                t + 600.0 + world.rng.expovariate(1.0 / 7200.0),
                "ticket",
                ("payment", 2 if rand() < 0.6 else 3),
            )
        return False
    user.cart.clear()
    if rand() < 0.05 + 0.04 * min(amount / 200.0, 1.0):
        refund_at = t + DAY * (1.0 + rand() * 9.0)
        reason = _REFUND_REASONS[int(rand() * len(_REFUND_REASONS))]
        share = 1.0 if rand() < 0.7 else 0.2 + 0.6 * rand()
        if rand() < 0.45:  # many refunds begin with a complaint
            opened = max(t + 3600.0, refund_at - DAY * (0.1 + rand()))
            user.schedule(opened, "ticket", ("refund", 1 if rand() < 0.5 else 2))
        user.schedule(refund_at, "refund", (order_id, round(amount * share, 2), reason))
    elif rand() < 0.02:
        user.schedule(t + DAY * (2.0 + rand() * 6.0), "ticket", ("delivery", 1))
    return True


def _emit_deferred(world: _World, user: _User, ts: float, kind: str, data: tuple) -> None:
    ts = round(ts, 3)
    if kind == "refund":
        order_id, amount, reason = data
        world.rows["refunds"].append((ts, order_id, user.uid, amount, reason))
        user.score += _W_REFUND
    else:
        category, severity = data
        world.ticket_n += 1
        world.rows["support_tickets"].append(
            (ts, f"t-{world.ticket_n:06d}", user.uid, category, severity)
        )
        user.score += _W_TICKET * severity


def _to_dicts(stream: str, rows: list[tuple]) -> list[dict]:
    """Sort a stream's rows by time and turn them into events with sequential ids."""
    rows.sort(key=lambda row: row[0])
    if stream == "signups":
        return [
            {
                "event_id": f"su-{i:09d}",
                "user_id": u,
                "email": e,
                "country": c,
                "channel": ch,
                "ts": ts,
            }
            for i, (ts, u, e, c, ch) in enumerate(rows)
        ]
    if stream == "sessions":
        return [
            {"event_id": f"se-{i:09d}", "session_id": s, "user_id": u, "device": dv, "ts": ts}
            for i, (ts, s, u, dv) in enumerate(rows)
        ]
    if stream == "page_views":
        return [
            {
                "event_id": f"pv-{i:09d}",
                "user_id": u,
                "session_id": s,
                "page": pg,
                "item_id": it,
                "ts": ts,
            }
            for i, (ts, u, s, pg, it) in enumerate(rows)
        ]
    if stream == "cart_events":
        return [
            {
                "event_id": f"ce-{i:09d}",
                "user_id": u,
                "item_id": it,
                "action": a,
                "quantity": q,
                "price": pr,
                "ts": ts,
            }
            for i, (ts, u, it, a, q, pr) in enumerate(rows)
        ]
    if stream == "purchases":
        return [
            {
                "event_id": f"pu-{i:09d}",
                "order_id": o,
                "user_id": u,
                "amount": am,
                "items": n,
                "status": st,
                "payment_method": pm,
                "ts": ts,
            }
            for i, (ts, o, u, am, n, st, pm) in enumerate(rows)
        ]
    if stream == "refunds":
        return [
            {
                "event_id": f"rf-{i:09d}",
                "order_id": o,
                "user_id": u,
                "amount": am,
                "reason": r,
                "ts": ts,
            }
            for i, (ts, o, u, am, r) in enumerate(rows)
        ]
    return [
        {
            "event_id": f"st-{i:09d}",
            "ticket_id": t,
            "user_id": u,
            "category": c,
            "severity": sv,
            "ts": ts,
        }
        for i, (ts, t, u, c, sv) in enumerate(rows)
    ]
