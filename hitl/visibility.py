"""The namespace's search attributes: checked and, where missing, registered."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from hitl import contract


async def missing_search_attributes(client: Client) -> list[str]:
    listing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return [
        key.name for key in contract.SEARCH_ATTRIBUTES if key.name not in listing.custom_attributes
    ]


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the project's search attributes if the server lacks them; returns those added.

    The dev server started by this project registers them at launch; a server started
    any other way (docker compose, a cluster) gets them from the first worker.
    """
    try:
        missing = await missing_search_attributes(client)
    except RPCError as error:
        # Temporal's time-skipping test server can add search attributes but not list them.
        if error.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        missing = [key.name for key in contract.SEARCH_ATTRIBUTES]
    if missing:
        wanted = {
            key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
            for key in contract.SEARCH_ATTRIBUTES
        }
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={name: wanted[name] for name in missing},
                )
            )
        except RPCError as error:
            # Another worker (or an earlier call on a server that can't list) added them.
            if error.status is not RPCStatusCode.ALREADY_EXISTS:
                raise
            return []
    return missing
