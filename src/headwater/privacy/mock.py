"""Mock values: realistic fakes (from Faker) that stand in for PII wherever a person looks at
data, stable per pseudonym (the same pseudonym always shows the same fake), and never derived
from the clear value, which headwater never holds. Each is marked as mock where it is shown.

Faker is imported when a first mock value is made: nothing on the ingest or serving path uses
this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from headwater.definitions import Stream

MOCK_SUFFIX = " (mock)"  # how tables mark a mock value

# What a field's name says it holds -> the Faker provider whose fakes look like it; the first
# pattern found in the name wins (names are compared in lowercase, '-' and ' ' as '_').
_PROVIDERS: tuple[tuple[str, str], ...] = (
    (r"e_?mail", "safe_email"),  # example.org/.com/.net addresses: never someone's real one
    (r"phone|mobile|msisdn|tel(ephone)?\b", "phone_number"),
    (r"first_?name|given_?name", "first_name"),
    (r"last_?name|surname|family_?name", "last_name"),
    (r"user_?name|login|handle|nick", "user_name"),
    (r"(^|_)name$|full_?name|customer|person|holder", "name"),
    (r"ipv6", "ipv6"),
    (r"(^|_)ip(_|$)|ip_?addr|ipv4", "ipv4"),
    (r"street|address|addr", "street_address"),
    (r"city|town", "city"),
    (r"zip|postal|postcode", "postcode"),
    (r"country", "country"),
    (r"iban", "iban"),
    (r"card|pan(_|$)", "credit_card_number"),
    (r"ssn|social_?security|national_?id|tax_?id", "ssn"),
    (r"birth|dob", "date_of_birth"),
    (r"company|employer|organi[sz]ation", "company"),
    (r"url|website|homepage", "url"),
    (r"device_?id|uuid|guid", "uuid4"),
    (r"license_?plate|plate", "license_plate"),
)


def provider_for(field: str) -> str:
    """The Faker provider of a field's fakes, from its name.

    >>> provider_for("email"), provider_for("billing-phone"), provider_for("customer_name")
    ('safe_email', 'phone_number', 'name')
    >>> provider_for("notes")
    'bothify'
    """
    name = re.sub(r"[\s-]+", "_", field.lower())
    for pattern, provider in _PROVIDERS:
        if re.search(pattern, name):
            return provider
    return "bothify"


@cache
def _faker(locale: str) -> Any:
    from faker import Faker

    return Faker(locale)


def _seed(field: str, token: str) -> int:
    digest = hashlib.blake2b(f"{field}\x00{token}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def mock_value(field: str, token: object, locale: str = "en_US") -> str:
    """A realistic fake for the PII field ``field`` standing in for ``token`` (a pseudonym,
    or any stable stand-in): the same token always gives the same fake, and the fake says
    nothing of the clear value.

    >>> a = mock_value("email", "pii_0123")
    >>> a == mock_value("email", "pii_0123") and "@" in a and a != mock_value("email", "pii_4567")
    True
    """
    fake = _faker(locale)
    fake.seed_instance(_seed(field, str(token)))
    provider = provider_for(field)
    if provider == "bothify":
        return str(fake.bothify("????-####"))
    value = getattr(fake, provider)()
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


# -- mock events ------------------------------------------------------------------------------

OBSERVED = 20_000  # history rows a profile looks at, at most
CATEGORIES = 1_000  # distinct values kept of a string field (beyond: a free-text field)
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class FieldProfile:
    """What one non-PII field looked like: its null rate and the values to draw from (with
    their weights for a categorical field); ``None`` values: nothing observed."""

    null_rate: float = 0.0
    values: tuple[Any, ...] | None = None
    weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class StreamProfile:
    """What a stream's history looked like: events per entity (of its first key), the time
    span it covers, and each field (PII fields are never profiled: fakes stand in for them)."""

    rows: int
    per_entity: tuple[int, ...]
    span_us: int
    fields: Mapping[str, FieldProfile]


def profile(stream: Stream, sample: Any) -> StreamProfile:
    """The profile of a pandas DataFrame of a stream's events (a sample of its history, times
    in UTC microseconds)."""
    import pandas as pd

    fields: dict[str, FieldProfile] = {}
    for name, spec in stream.fields.items():
        if spec.pii or name not in sample.columns or name == stream.time:
            continue
        column = sample[name]
        present = column.dropna()
        null_rate = 1 - len(present) / len(column) if len(column) else 0.0
        if spec.dtype.value == "string":
            counts = present.astype(str).value_counts()
            if len(counts) > CATEGORIES or (len(counts) > 50 and len(counts) > 0.5 * len(present)):
                fields[name] = FieldProfile(null_rate)  # free text or ids: fakes
                continue
            total = counts.sum() or 1
            fields[name] = FieldProfile(
                null_rate, tuple(counts.index), tuple(float(c / total) for c in counts)
            )
        elif spec.dtype.value == "timestamp":
            stamps = pd.to_datetime(present, unit="us", utc=True)  # stored as UTC microseconds
            fields[name] = FieldProfile(null_rate, tuple(t.isoformat() for t in stamps))
        else:
            fields[name] = FieldProfile(null_rate, tuple(present.tolist()))
    first = stream.keys[0]
    per_entity = tuple(int(c) for c in sample[first].value_counts()) if len(sample) else ()
    times = sample[stream.time].dropna() if len(sample) else None
    span = int(times.max() - times.min()) if times is not None and len(times) else 0
    return StreamProfile(len(sample), per_entity, max(span, DAY_US), fields)


def mock_events(
    stream: Stream,
    rows: int,
    *,
    now_us: int,
    observed: StreamProfile | None = None,
    entities: int | None = None,
    days: float | None = None,
    seed: int = 0,
    locale: str = "en_US",
) -> list[dict[str, Any]]:
    """``rows`` realistic events of ``stream`` (sorted by time, ending before ``now_us``):
    numbers and categories drawn from the ``observed`` profile (or plausible defaults for a
    stream never seen), PII fields as Faker fakes stable per entity, keys ``mock-000001``...
    (entities active as often as observed ones were), ids ``mock-SEED-N`` (so ingesting the
    same mock events again adds nothing)."""
    import numpy as np

    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    rng = np.random.default_rng(seed)
    count = entities or _entities(rows, observed)
    activity = (
        rng.choice(np.array(observed.per_entity, dtype=float), count)
        if observed is not None and observed.per_entity
        else rng.gamma(1.5, 1.0, count)
    )
    who = np.sort(rng.choice(count, rows, p=activity / activity.sum()))
    span = int(days * DAY_US) if days else (observed.span_us if observed else 30 * DAY_US)
    times = np.sort(now_us - 1 - rng.integers(0, span, rows))
    columns: dict[str, list[Any]] = {}
    for i, key in enumerate(stream.keys):
        columns[key] = _keys(stream, key, who if i == 0 else rng.integers(0, count, rows))
    columns[stream.time] = [_iso(int(t)) for t in times]
    for name, spec in stream.fields.items():
        if name in columns or name == stream.id_field:
            continue
        seen = observed.fields.get(name) if observed else None
        if spec.pii:
            entity = columns[stream.keys[0]]
            columns[name] = [mock_value(name, f"{seed}:{e}", locale) for e in entity]
        else:
            columns[name] = _draw(spec.dtype.value, name, seen, rows, rng, locale, now_us)
        if spec.nullable and seen is not None and seen.null_rate > 0:
            blank = rng.random(rows) < seen.null_rate
            columns[name] = [None if b else v for v, b in zip(columns[name], blank, strict=True)]
    events = [{name: values[i] for name, values in columns.items()} for i in range(rows)]
    if stream.id_field:
        for i, event in enumerate(events):
            event[stream.id_field] = f"mock-{seed}-{i}"
    order = np.argsort(times, kind="stable")
    return [events[int(i)] for i in order]


def _entities(rows: int, observed: StreamProfile | None) -> int:
    if observed is not None and observed.per_entity:
        mean = sum(observed.per_entity) / len(observed.per_entity)
        return max(1, round(rows / mean))
    return max(1, rows // 10)


def _keys(stream: Stream, key: str, indexes: Any) -> list[Any]:
    if stream.fields[key].dtype.value == "int":
        return [int(i) + 1 for i in indexes]
    return [f"mock-{int(i) + 1:06d}" for i in indexes]


def _iso(micros: int) -> str:
    from headwater.definitions.types import from_micros

    return from_micros(micros).isoformat()


def _draw(
    dtype: str,
    name: str,
    seen: FieldProfile | None,
    rows: int,
    rng: Any,
    locale: str,
    now_us: int,
) -> list[Any]:
    if seen is not None and seen.values:
        picked = rng.choice(len(seen.values), rows, p=seen.weights)
        return [seen.values[int(i)] for i in picked]
    if dtype == "int":
        return [int(v) for v in rng.poisson(5, rows)]
    if dtype == "float":
        return [round(float(v), 2) for v in rng.gamma(2.0, 20.0, rows)]
    if dtype == "bool":
        return [bool(v) for v in rng.random(rows) < 0.5]
    if dtype == "timestamp":
        return [_iso(now_us - int(v)) for v in rng.integers(1, 365 * DAY_US, rows)]
    fake = _faker(locale)
    fake.seed_instance(int(rng.integers(0, 2**62)))
    provider = provider_for(name)
    if provider != "bothify":  # a country, a city...: a few of Faker's, as categories
        pool = [str(getattr(fake, provider)()) for _ in range(12)]
        return [pool[int(i)] for i in rng.integers(0, len(pool), rows)]
    words = [str(fake.word()) for _ in range(12)]
    return [words[int(i)] for i in rng.integers(0, len(words), rows)]
