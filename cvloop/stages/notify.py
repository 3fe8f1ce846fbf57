"""Telling the runbook's people when they are needed (:mod:`cvloop.adapters.notify`): the
stages' side — which owners, which links."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvloop.context import Context


def tell(
    ctx: Context,
    kind: str,
    key: str,
    title: str,
    body: str = "",
    links: Mapping[str, str] | None = None,
    roles: Sequence[str] = ("on_call",),
) -> bool:
    """Notify the owners in ``roles`` (params ``owners``) of this occurrence, once."""
    from cvloop.adapters.notify import notify

    return notify(ctx.store, ctx.params.registry.model_name, kind, key, title, body, links,
                  ctx.params.owners.names(*roles))  # fmt: skip


def model_version_url(ctx: Context, version: str) -> str:
    """The model version's page in the MLflow UI (where the ML lead approves)."""
    model = ctx.params.registry.model_name
    return f"{ctx.settings.mlflow_tracking_uri}/#/models/{model}/versions/{version}"


def flow_run_url(ctx: Context, flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI (None outside a flow run)."""
    if not flow_run_id:
        return None
    return f"{ctx.settings.prefect_ui_url}/runs/flow-run/{flow_run_id}"
