"""A remote headwater server from Python: the calls of ``Project`` that make sense over the
network, with the same return types, authenticated by an API key.

>>> client = Client("http://127.0.0.1:8800", api_key="hw_0123456789abcdef_" + "x" * 43)
>>> client.url
'http://127.0.0.1:8800'
>>> client.close()
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import orjson

from headwater.errors import HeadwaterError, NotFoundError, StoreUnavailable
from headwater.ingestion.service import IngestResult, Rejection
from headwater.registry.registry import PromotionRefused
from headwater.security.access import Forbidden
from headwater.security.keys import Unauthenticated

API_KEY_ENV = "HEADWATER_API_KEY"


class ClientError(HeadwaterError):
    """The server refused a request; ``status`` and ``detail`` are its answer."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class RateLimited(ClientError):
    """The key is over its rate limit; retry after ``retry_after`` seconds."""

    def __init__(self, status: int, detail: Any, retry_after: float) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after


class Client:
    """A headwater server at ``url``; ``api_key`` defaults to ``$HEADWATER_API_KEY``;
    ``verify`` is httpx's: False, or the CA bundle of a server with its own certificate."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if isinstance(verify, str):  # a CA bundle, e.g. a server's own certificate
            verify = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, verify=verify, transport=transport
        )

    # -- events --------------------------------------------------------------------------

    def ingest(self, stream: str, events: Iterable[Mapping[str, Any]]) -> IngestResult:
        """Send events; the result says which were accepted (durably) and why others were
        rejected, as ``Project.ingest`` does. A batch of only rejected events is a result
        too, not an exception."""
        payload = orjson.dumps(list(events), option=orjson.OPT_SERIALIZE_NUMPY)
        response = self._http.post(
            f"/v1/events/{stream}", content=payload, headers={"content-type": "application/json"}
        )
        body = response.json() if response.status_code in (200, 422) else None
        if response.status_code == 422 and isinstance(body, dict):
            body = body.get("detail")
        if not isinstance(body, dict) or "rejected" not in body:
            self._raise(response)
        assert isinstance(body, dict)
        return IngestResult(
            accepted=body["accepted"],
            duplicates=body["duplicates"],
            rejected=[Rejection(r["index"], r["reason"]) for r in body["rejected"]],
            offsets=list(body["offsets"]),
        )

    def feedback(self, stream: str, events: Iterable[Mapping[str, Any]]) -> IngestResult:
        """Send ground truth (a service's feedback stream, a label's stream): a key with
        ``feedback:STREAM`` may do this and nothing else."""
        return self.ingest(stream, events)

    # -- features and predictions ----------------------------------------------------------

    def online_features(
        self,
        entity_keys: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        features: Sequence[str],
        *,
        at: datetime | None = None,
    ) -> Any:
        """Online feature values: one mapping gives one dict, a list gives a list."""
        single = isinstance(entity_keys, Mapping)
        rows = [dict(entity_keys)] if isinstance(entity_keys, Mapping) else list(entity_keys)
        body: dict[str, Any] = {"entities": rows, "features": list(features)}
        if at is not None:
            body["at"] = at.isoformat()
        results = self._json(self._http.post("/v1/features", json=body))["results"]
        return results[0] if single else results

    def predict(
        self, service: str, entity: Mapping[str, Any] | None = None, /, **keys: Any
    ) -> dict[str, Any]:
        """A prediction by entity id, as ``Project.predict`` returns it."""
        row = {**(entity or {}), **keys}
        answer = self._json(self._http.post(f"/v1/predict/{service}", json={"entity": row}))
        return dict(answer["predictions"][0])

    def predict_many(self, service: str, rows: Sequence[Mapping[str, Any]]) -> list[dict]:
        answer = self._json(
            self._http.post(f"/v1/predict/{service}", json={"entities": list(rows)})
        )
        return list(answer["predictions"])

    # -- models and alerts -----------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Every model with its versions' metrics and aliases."""
        return list(self._json(self._http.get("/v1/models"))["models"])

    def promote(
        self,
        model: str,
        version: int,
        *,
        alias: str = "champion",
        reason: str,
        force: bool = False,
    ) -> dict[str, Any]:
        """Point an alias at a version (``PromotionRefused`` when the policy says no)."""
        body = {"version": version, "reason": reason, "force": force}
        return self._json(self._http.post(f"/v1/models/{model}/aliases/{alias}", json=body))

    def rollback(self, model: str, *, alias: str = "champion", reason: str) -> int:
        """Point an alias back at its previous version; returns that version."""
        body = {"rollback": True, "reason": reason}
        answer = self._json(self._http.post(f"/v1/models/{model}/aliases/{alias}", json=body))
        return int(answer["version"])

    def ack_alert(self, alert_id: str, reason: str = "") -> dict[str, Any]:
        return self._json(self._http.post(f"/v1/alerts/{alert_id}/ack", json={"reason": reason}))

    # -- plumbing ----------------------------------------------------------------------------

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code != 200:
            self._raise(response)
        return response.json()

    def _raise(self, response: httpx.Response) -> None:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        status = response.status_code
        if status == 429:
            retry = float(response.headers.get("retry-after", "1"))
            raise RateLimited(status, detail, retry)
        kinds: dict[int, type[HeadwaterError]] = {
            401: Unauthenticated,
            403: Forbidden,
            404: NotFoundError,
            409: PromotionRefused,
            503: StoreUnavailable,
        }
        kind = kinds.get(status)
        if kind is not None:
            raise kind(str(detail))
        raise ClientError(status, detail)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
