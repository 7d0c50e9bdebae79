"""Tasks drop what they finished from the in-flight ledger (stores.inflight)."""

from __future__ import annotations

from stores.inflight import InflightLedger
from tasks import context


def settle_inflight(batch_id: str) -> None:
    """The batch is done (applied, screened or dead-lettered): no reaper need send it again."""
    store = context.store()
    client, keys = getattr(store, "client", None), getattr(store, "keys", None)
    if client is not None and keys is not None:
        InflightLedger(client, keys).done(batch_id)
