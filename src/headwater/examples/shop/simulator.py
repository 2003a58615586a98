"""A deterministic simulator of the shop: users, their visits, carts, orders, refunds, tickets.

Behind the events runs a hidden churn process, recorded in ``Simulation.churn_times``.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

DAY = 86_400.0
CATALOG_SIZE = 500
# Each stream's row layout (time first, for sorting) and event id prefix.
_FIELDS = {
    "signups": ("ts", "user_id", "email", "country", "channel"),
    "sessions": ("ts", "session_id", "user_id", "device"),
    "page_views": ("ts", "user_id", "session_id", "page", "item_id"),
    "cart_events": ("ts", "user_id", "item_id", "action", "quantity", "price"),
    "purchases": ("ts", "order_id", "user_id", "amount", "items", "status", "payment_method"),
    "refunds": ("ts", "order_id", "user_id", "amount", "reason"),
    "support_tickets": ("ts", "ticket_id", "user_id", "category", "severity"),
}
_PREFIX = {
    "signups": "su",
    "sessions": "se",
    "page_views": "pv",
    "cart_events": "ce",
    "purchases": "pu",
    "refunds": "rf",
    "support_tickets": "st",
}
STREAMS = tuple(_FIELDS)

# Relative traffic per hour of the (UTC) day: quiet nights, busy evenings.
_HOURLY = (6, 4, 3, 2, 2, 3, 6, 10, 14, 16, 17, 18, 20, 19, 18, 18, 19, 22, 28, 34, 38, 36, 26, 14)
_HOURLY_MAX = max(_HOURLY)
_COUNTRIES = {"US": 38, "GB": 12, "DE": 11, "FR": 9, "CA": 7, "NL": 5, "ES": 5, "IT": 5, "AU": 4}
_CHANNELS = {"organic": 40, "ads": 25, "referral": 12, "email": 13, "social": 10}
_PAYMENTS = {"card": 55, "paypal": 25, "apple_pay": 15, "gift_card": 5}
# Probability that a payment attempt fails, by payment method (about 5% overall).
_PAYMENT_FAIL = {"card": 0.055, "paypal": 0.04, "apple_pay": 0.03, "gift_card": 0.08}
_REFUND_REASONS = ("damaged", "not_as_described", "late_delivery", "changed_mind", "wrong_size")
_BACKGROUND_TICKETS = ("account", "product_question", "other")
# Where a visitor goes next: (cumulative probability, page); past the last one they leave.
_NEXT = {
    "home": ((0.35, "search"), (0.75, "product"), (0.82, "cart")),
    "search": ((0.62, "product"), (0.78, "search")),
    "looked": ((0.36, "product"), (0.6, "search"), (0.65, "home"), (0.72, "cart")),
    "added": ((0.45, "cart"), (0.65, "product"), (0.8, "search")),
}
# How much each bad experience adds to a user's frustration score (which decays daily).
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
        raise ValueError(f"need users >= 0 and days > 0, got users={users}, days={days}")
    rng = random.Random(seed)
    world = _World(rng, float(end) - days * DAY, float(end), drift)
    countries, country_cum = _cum(_COUNTRIES)
    channels, channel_cum = _cum(_CHANNELS)
    methods, method_cum = _cum(_PAYMENTS)
    user_ids = [f"u-{i:06d}" for i in range(users)]
    churn_times: dict[str, float] = {}
    for uid in user_ids:
        # Existing customers' accounts appear during the first day; the others sign up later.
        veteran = rng.random() < 0.45
        signup = round(world.start + rng.random() * (DAY if veteran else days * DAY) * 0.999, 3)
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


def _cum(weights: dict[str, int]) -> tuple[list[str], list[float]]:
    return list(weights), list(accumulate(float(w) for w in weights.values()))


class _World:
    """Shared state of one run: the catalog, the id counters and the output rows."""

    def __init__(self, rng: random.Random, start: float, end: float, drift: float) -> None:
        self.rng, self.start, self.end, self.drift = rng, start, end, drift
        self.drift_from = start + (end - start) * 2.0 / 3.0
        # Catalog: log-normal prices ending in .99; Zipf-like popularity in a shuffled order.
        self.items = [f"it-{i:04d}" for i in range(CATALOG_SIZE)]
        self.prices = [max(1.99, round(math.exp(rng.gauss(3.2, 0.75))) - 0.01) for _ in self.items]
        ranks = list(range(CATALOG_SIZE))
        rng.shuffle(ranks)
        self.item_cum = list(accumulate(1.0 / (rank + 1) ** 1.07 for rank in ranks))
        self.session_n = self.order_n = self.ticket_n = 0
        self.rows: dict[str, list[tuple]] = {name: [] for name in STREAMS}

    def pick_item(self) -> int:
        cum = self.item_cum
        return min(bisect(cum, self.rng.random() * cum[-1]), CATALOG_SIZE - 1)

    def drifted(self, t: float) -> float:
        """How much drift applies at time ``t``: ``drift`` in the last third, else 0."""
        return self.drift if t >= self.drift_from else 0.0


class _User:
    """One shopper's latent traits and running state."""

    def __init__(self, uid: str, rng: random.Random, signup: float, veteran: bool) -> None:
        self.uid, self.signup, self.veteran = uid, signup, veteran
        self.rate = min(6.0, math.exp(rng.gauss(-0.35, 0.8)))  # visits per day
        self.sens = rng.random()  # price sensitivity
        self.patience = rng.betavariate(2.5, 2.0)
        r = rng.random()
        self.device = "mobile" if r < 0.58 else "desktop" if r < 0.9 else "tablet"
        self.payment = "card"
        self.cart: list[tuple[int, int, float]] = []  # (item index, quantity, unit price)
        self.score = 0.0  # frustration from recent bad experiences
        self.daily: list[int] = []  # visits per simulated day
        self.pending: list[tuple] = []  # heap of future (ts, seq, kind, data)
        self.seq = 0

    def schedule(self, ts: float, kind: str, data: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (ts, self.seq, kind, data))


def _live(world: _World, user: _User, days: int) -> float | None:
    """Simulate one user's life from signup, day by day; returns when they churned, if so."""
    rand = world.rng.random
    first_day = int((user.signup - world.start) // DAY)
    user.daily = [0] * days
    for d in range(first_day, days):
        day_start = world.start + d * DAY
        day_end = min(day_start + DAY, world.end)
        lower = max(day_start, user.signup)
        limit, churn_at = day_end, None
        if d > first_day:
            # The hidden churn hazard: frustration, worse for the impatient, and disengagement.
            user.score *= 0.88
            age = d - first_day
            recent = sum(user.daily[max(first_day, d - 7) : d]) * 7.0 / min(age, 7)
            engagement = 1.0 + 2.0 * math.exp(-recent / 2.0)
            hazard = 0.0035 * engagement + 0.03 * user.score * (1.6 - user.patience)
            if rand() < min(hazard, 0.6):
                churn_at = max(round(day_start + rand() * (day_end - day_start), 3), lower + 1.0)
                limit = churn_at
        # The day's visits: a Poisson count, placed by the daily rhythm.
        novelty = 0.0 if user.veteran else 0.9 * math.exp(-(d - first_day) / 4.0)
        weekend = (int(day_start // DAY) + 3) % 7 >= 5
        lam = user.rate * (1.0 + novelty) * (1.15 if weekend else 1.0)
        lam *= (1.0 - 0.4 * world.drifted(day_start)) * (day_end - lower) / DAY
        times = [_visit_time(rand, lower, day_end) for _ in range(_poisson(rand, lam))]
        if d == first_day and rand() < 0.8:
            times.append(user.signup + 5.0 + rand() * 60.0)  # the visit right after signing up
        times.sort()
        busy_until = lower
        for t0 in times:
            t0 = max(t0, busy_until + 60.0)
            if t0 >= limit:
                break
            user.daily[d] += 1
            busy_until = _session(world, user, t0, limit)
        # Deferred consequences (refunds, tickets) that fall before the day's end (or churn).
        pending = user.pending
        while pending and pending[0][0] < limit:
            ts, _, kind, data = heapq.heappop(pending)
            _emit_deferred(world, user, round(ts, 3), kind, data)
        if churn_at is not None:
            return churn_at
    return None


def _poisson(rand: Callable[[], float], lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, rand()
    while p > threshold:
        k += 1
        p *= rand()
    return k


def _visit_time(rand: Callable[[], float], lower: float, upper: float) -> float:
    """A time in [lower, upper), denser in the evening (rejection sampling on the hour)."""
    t = lower
    for _ in range(20):
        t = lower + rand() * (upper - lower)
        if rand() * _HOURLY_MAX < _HOURLY[int(t % DAY) // 3600]:
            break
    return t


def _next(r: float, after: str, cart: list) -> str:
    for p, page in _NEXT[after]:
        if r < p:
            return "" if page == "cart" and not cart else page
    return ""


def _session(world: _World, user: _User, t: float, limit: float) -> float:
    """One visit starting at ``t``, cut off at ``limit``; returns when it ended."""
    rng, rows = world.rng, world.rows
    rand = rng.random
    world.session_n += 1
    sid, uid, cart = f"s-{world.session_n:07d}", user.uid, user.cart
    rows["sessions"].append((round(t, 3), sid, uid, user.device))
    page_views, cart_events = rows["page_views"], rows["cart_events"]
    price_up = 1.0 + 0.25 * world.drifted(t)
    gap_mean = 20.0 + 40.0 * user.patience
    r = rand()
    page = "home" if r < 0.55 else "search" if r < 0.8 else "product"
    if cart and rand() < 0.2:
        page = "cart"
    for _ in range(40):
        ts = round(t, 3)
        if ts >= limit:
            return t
        if page == "product":
            item = world.pick_item()
            page_views.append((ts, uid, sid, "product", world.items[item]))
            price = round(world.prices[item] * price_up, 2)
            t += 5.0 + rand() * 40.0
            if rand() < 0.3 * math.exp(-user.sens * price / 45.0):
                ts = round(t, 3)
                if ts >= limit:
                    return t
                r = rand()
                qty = 1 if r < 0.84 else 2 if r < 0.96 else 3
                cart.append((item, qty, price))
                cart_events.append((ts, uid, world.items[item], "add", qty, price))
                page = _next(rand(), "added", cart)
            else:
                page = _next(rand(), "looked", cart)
        elif page in ("home", "search"):
            page_views.append((ts, uid, sid, page, None))
            page = _next(rand(), page, cart)
        elif page == "cart":
            page_views.append((ts, uid, sid, "cart", None))
            r = rand()
            if not cart:
                page = "home" if r < 0.4 else ""
            elif r < 0.12 + 0.15 * user.sens:
                t += 3.0 + rand() * 20.0
                ts = round(t, 3)
                if ts >= limit:
                    return t
                item, qty, price = cart.pop(int(rand() * len(cart)))
                cart_events.append((ts, uid, world.items[item], "remove", qty, price))
                r = rand()
                page = "cart" if cart and r < 0.3 else "product" if r < 0.6 else ""
            elif r < 0.6 - 0.3 * user.sens:
                page = "checkout"
            else:
                page = "product" if r < 0.75 else ""
        else:  # checkout: pay, and on failure maybe try again
            page_views.append((ts, uid, sid, "checkout", None))
            t += 20.0 + rand() * 90.0
            if round(t, 3) >= limit:
                return t
            if _pay(world, user, t):
                page = "home" if rand() < 0.1 else ""
            else:
                page = "checkout" if rand() < 0.25 + 0.5 * user.patience else ""
        if not page:
            break
        t += 3.0 + rng.expovariate(1.0 / gap_mean)
    if rand() < 0.004:  # questions and account trouble, unrelated to orders
        category = _BACKGROUND_TICKETS[int(rand() * len(_BACKGROUND_TICKETS))]
        user.schedule(t + 60.0 + rand() * 3 * 3600.0, "ticket", (category, 1))
    return t


def _pay(world: _World, user: _User, t: float) -> bool:
    """A payment attempt for the cart at ``t``; schedules its consequences."""
    rand = world.rng.random
    world.order_n += 1
    order_id = f"o-{world.order_n:07d}"
    amount = round(sum(qty * price for _, qty, price in user.cart), 2)
    n_items = sum(qty for _, qty, _ in user.cart)
    failed = rand() < _PAYMENT_FAIL[user.payment] * (1.0 + 3.0 * world.drifted(t))
    world.rows["purchases"].append(
        (round(t, 3), order_id, user.uid, amount, n_items, "failed" if failed else "paid",
         user.payment)
    )  # fmt: skip
    if failed:
        user.score += _W_FAILED
        if rand() < 0.25 + 0.3 * (1.0 - user.patience):
            opened = t + 600.0 + world.rng.expovariate(1.0 / 7200.0)
            user.schedule(opened, "ticket", ("payment", 2 if rand() < 0.6 else 3))
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
    if kind == "refund":
        order_id, amount, reason = data
        world.rows["refunds"].append((ts, order_id, user.uid, amount, reason))
        user.score += _W_REFUND
    else:
        category, severity = data
        world.ticket_n += 1
        ticket = (ts, f"t-{world.ticket_n:06d}", user.uid, category, severity)
        world.rows["support_tickets"].append(ticket)
        user.score += _W_TICKET * severity


def _to_dicts(stream: str, rows: list[tuple]) -> list[dict]:
    """Sort a stream's rows by time and turn them into events with sequential ids."""
    rows.sort(key=lambda row: row[0])
    prefix = _PREFIX[stream]
    if stream == "page_views":  # by far the largest stream: a literal dict builds faster
        return [
            {"ts": ts, "user_id": u, "session_id": s, "page": pg, "item_id": it,
             "event_id": f"{prefix}-{i:09d}"}
            for i, (ts, u, s, pg, it) in enumerate(rows)
        ]  # fmt: skip
    names = _FIELDS[stream]
    return [
        dict(zip(names, row, strict=True), event_id=f"{prefix}-{i:09d}")
        for i, row in enumerate(rows)
    ]
