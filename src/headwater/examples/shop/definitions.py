"""The shop: an e-commerce application's raw events and the features computed from them."""

import numpy as np

from headwater import (
    Derived,
    Entity,
    Expectation,
    Feature,
    Int,
    Label,
    Model,
    PromotionPolicy,
    RetrainPolicy,
    Search,
    Segment,
    Service,
    Stream,
    agg,
    col,
    step,
)

GROWTH = "growth-analytics@shop.example"
PAYMENTS = "payments@shop.example"
WEB = "web-platform@shop.example"
SUPPORT = "customer-care@shop.example"

user = Entity("user", keys="user_id", owner=GROWTH, description="A registered shopper")
item = Entity("item", keys="item_id", owner=WEB, description="A product in the catalog")

signups = Stream(
    "signups",
    fields={
        "user_id": "string",
        "email": "string",
        "country": "string",
        "channel": "string",
        "ts": "timestamp",
    },
    key="user_id",
    time="ts",
    pii=["email"],
    required=["country"],
    owner=GROWTH,
    description="One event per account created",
)
sessions = Stream(
    "sessions",
    fields={"session_id": "string", "user_id": "string", "device": "string", "ts": "timestamp"},
    key="user_id",
    time="ts",
    owner=WEB,
    description="A visit to the shop, at its start",
)
page_views = Stream(
    "page_views",
    fields={
        "user_id": "string",
        "session_id": "string",
        "page": "string",
        "item_id": "string",
        "ts": "timestamp",
    },
    key="user_id",
    time="ts",
    owner=WEB,
    description="Pages seen: home, search, product (with item_id), cart, checkout",
)
cart_events = Stream(
    "cart_events",
    fields={
        "user_id": "string",
        "item_id": "string",
        "action": "string",
        "quantity": "int",
        "price": "float",
        "ts": "timestamp",
    },
    key="user_id",
    time="ts",
    owner=WEB,
    description="Items added to or removed from carts",
)
purchases = Stream(
    "purchases",
    fields={
        "order_id": "string",
        "user_id": "string",
        "amount": "float",
        "items": "int",
        "status": "string",
        "payment_method": "string",
        "ts": "timestamp",
    },
    key="user_id",
    time="ts",
    required=["amount", "status"],
    owner=PAYMENTS,
    description="Checkout attempts; status is 'paid' or 'failed'",
)
refunds = Stream(
    "refunds",
    fields={
        "order_id": "string",
        "user_id": "string",
        "amount": "float",
        "reason": "string",
        "ts": "timestamp",
    },
    key="user_id",
    time="ts",
    owner=PAYMENTS,
    description="Money returned for an order",
)
support_tickets = Stream(
    "support_tickets",
    fields={
        "ticket_id": "string",
        "user_id": "string",
        "category": "string",
        "severity": "int",
        "ts": "timestamp",
    },
    key="user_id",
    time="ts",
    owner=SUPPORT,
    description="Tickets opened with customer care",
)


def _feature(
    name: str,
    stream: Stream,
    aggregation,
    windows,
    owner=GROWTH,
    on=user,
    where=None,
    description="",
):
    return Feature(
        name,
        entity=on,
        stream=stream,
        aggregation=aggregation,
        windows=windows,
        where=where,
        owner=owner,
        description=description,
    )


paid = col("status") == "paid"
features = [
    _feature("sessions", sessions, agg.count(), ["1d", "7d", "30d"], description="Visits started"),
    _feature(
        "page_views", page_views, agg.count(), ["1h", "1d", "7d", "30d"], description="Pages seen"
    ),
    _feature(
        "product_views",
        page_views,
        agg.count(),
        ["1d", "7d"],
        where=col("page") == "product",
        description="Product pages seen",
    ),
    _feature(
        "items_viewed",
        page_views,
        agg.count_distinct("item_id"),
        ["7d", "30d"],
        description="Distinct products looked at",
    ),
    _feature(
        "recent_pages",
        page_views,
        agg.last_k("page", 5),
        ["1d"],
        description="The last five pages seen, latest first",
    ),
    _feature(
        "cart_adds",
        cart_events,
        agg.count(),
        ["1d", "7d"],
        where=col("action") == "add",
        description="Items put in the cart",
    ),
    _feature(
        "orders",
        purchases,
        agg.count(),
        ["7d", "30d", "lifetime"],
        where=paid,
        owner=PAYMENTS,
        description="Paid orders",
    ),
    _feature(
        "failed_payments",
        purchases,
        agg.count(),
        ["7d", "30d"],
        where=col("status") == "failed",
        owner=PAYMENTS,
        description="Failed payments",
    ),
    _feature(
        "spend",
        purchases,
        agg.sum("amount"),
        ["7d", "30d", "lifetime"],
        where=paid,
        owner=PAYMENTS,
        description="Money spent on paid orders",
    ),
    _feature(
        "order_value",
        purchases,
        agg.mean("amount"),
        ["30d", "lifetime"],
        where=paid,
        owner=PAYMENTS,
        description="Average paid order value",
    ),
    _feature(
        "order_value_std",
        purchases,
        agg.stddev("amount"),
        ["30d"],
        where=paid,
        owner=PAYMENTS,
        description="Spread of paid order values",
    ),
    _feature(
        "largest_order",
        purchases,
        agg.max("amount"),
        ["30d"],
        where=paid,
        owner=PAYMENTS,
        description="Largest paid order",
    ),
    _feature(
        "last_order_value",
        purchases,
        agg.last("amount"),
        ["lifetime"],
        where=paid,
        owner=PAYMENTS,
        description="Value of the latest paid order",
    ),
    _feature(
        "first_order_value",
        purchases,
        agg.first("amount"),
        ["lifetime"],
        where=paid,
        owner=PAYMENTS,
        description="Value of the first paid order",
    ),
    _feature(
        "refunds",
        refunds,
        agg.count(),
        ["30d", "lifetime"],
        owner=PAYMENTS,
        description="Refunds received",
    ),
    _feature(
        "refunded",
        refunds,
        agg.sum("amount"),
        ["30d"],
        owner=PAYMENTS,
        description="Money refunded",
    ),
    _feature(
        "tickets",
        support_tickets,
        agg.count(),
        ["7d", "30d"],
        owner=SUPPORT,
        description="Support tickets opened",
    ),
    _feature(
        "ticket_severity",
        support_tickets,
        agg.max("severity"),
        ["30d"],
        owner=SUPPORT,
        description="Worst ticket severity (1-3)",
    ),
    _feature(
        "last_ticket_category",
        support_tickets,
        agg.last("category"),
        ["lifetime"],
        owner=SUPPORT,
        description="What the latest ticket was about",
    ),
    _feature(
        "item_views",
        page_views,
        agg.count(),
        ["1d", "7d"],
        on=item,
        owner=WEB,
        where=col("page") == "product",
        description="Times the product page was seen",
    ),
    _feature(
        "item_cart_adds",
        cart_events,
        agg.count(),
        ["7d"],
        on=item,
        owner=WEB,
        where=col("action") == "add",
        description="Times the item was put in a cart",
    ),
]

derived = [
    Derived(
        "refund_rate_30d",
        inputs=["refunds_30d", "orders_30d"],
        fn=lambda c: c.refunds_30d / np.where(c.orders_30d > 0, c.orders_30d, np.nan),
        owner=PAYMENTS,
        description="Refunds per paid order over 30 days",
    ),
    Derived(
        "conversion_7d",
        inputs=["orders_7d", "sessions_7d"],
        fn=lambda c: c.orders_7d / np.where(c.sessions_7d > 0, c.sessions_7d, np.nan),
        owner=GROWTH,
        description="Paid orders per visit over 7 days",
    ),
    Derived(
        "basket_vs_usual",
        inputs=["order_value_30d"],
        context=["basket_value"],
        fn=lambda c: c.basket_value / c.order_value_30d,
        owner=GROWTH,
        description="The basket in the request relative to the user's usual order value",
    ),
]


# -- labels and models ---------------------------------------------------------------------

churned = Label(
    "churned_14d",
    entity=user,
    stream=sessions,
    aggregation=agg.count(),
    horizon="14d",
    transform=lambda visits: visits == 0,
    owner=GROWTH,
    description="The user does not visit in the 14 days after t",
)
buys = Label(
    "purchases_7d",
    entity=user,
    stream=purchases,
    aggregation=agg.count(),
    horizon="7d",
    where=paid,
    transform=lambda orders: orders > 0,
    owner=PAYMENTS,
    description="The user pays for at least one order in the 7 days after t",
)

BEHAVIOUR = [
    "sessions_1d",
    "sessions_7d",
    "sessions_30d",
    "page_views_7d",
    "page_views_30d",
    "product_views_7d",
    "items_viewed_30d",
    "cart_adds_7d",
    "orders_30d",
    "orders_lifetime",
    "failed_payments_30d",
    "spend_30d",
    "order_value_lifetime",
    "refunds_30d",
    "tickets_30d",
    "ticket_severity_30d",
    "last_ticket_category_lifetime",
    "refund_rate_30d",
    "conversion_7d",
]


def _lightgbm():
    from lightgbm import LGBMClassifier

    return LGBMClassifier(
        n_estimators=150,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=7,
        deterministic=True,
        n_jobs=1,
        verbose=-1,
    )


@step(outputs="features")
def drop_constant(train, features):
    """A step of the shop's own, between the split and the fit: the features that never
    vary on the training rows carry no signal; the fit (and serving) go without them."""
    return [f for f in features if train[f].nunique(dropna=False) > 1]


models = [
    Model(
        "churn",
        label=churned,
        features=BEHAVIOUR,
        estimator=_lightgbm,
        sample_every="1d",
        lookback="21d",
        test_fraction=0.3,
        k=100,
        # the heuristic a growth team would use without a model: fewer visits, more risk
        baseline=lambda df: -df["sessions_7d"],
        promotion=PromotionPolicy(metric="auc", max_regression=0.005),
        # a drift alert on the champion, or live AUC under 0.75, trains a challenger
        retrain=RetrainPolicy(on_drift=True, below=(("auc", 0.75),)),
        expectations=[
            Expectation("sessions_30d", min_value=0),
            Expectation("spend_30d", min_value=0, max_null_rate=0.0),
        ],
        # held-out and live metrics for new, occasional and regular customers
        segments=[Segment("orders_lifetime", bins=(1, 3))],
        owner=GROWTH,
        description="Who stops visiting: drives the retention campaign",
    ),
    Model(
        "purchase_propensity",
        label=buys,
        features=BEHAVIOUR,
        estimator=_lightgbm,
        sample_every="1d",
        lookback="21d",
        test_fraction=0.3,
        k=100,
        baseline=lambda df: df["cart_adds_7d"] + df["orders_30d"],
        steps=[drop_constant],
        # a small search (time-split validation inside the training rows), seeded
        search=Search(
            space={"num_leaves": Int(7, 31), "min_child_samples": Int(10, 40)},
            trials=5,
            timeout="60s",
        ),
        owner=PAYMENTS,
        description="Who buys next week: drives the coupon budget",
    ),
]


# -- services --------------------------------------------------------------------------------

services = [
    Service(
        "retention",
        model=models[0],
        owner=GROWTH,
        defaults={"sessions_30d": 0, "orders_lifetime": 0},
        description="Churn risk of a user: the retention campaign asks before each send",
    ),
    Service(
        "coupons",
        model=models[1],
        owner=PAYMENTS,
        description="Purchase propensity: who gets a coupon at checkout",
    ),
]
