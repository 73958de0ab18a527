"""Tools that can't be registered beside the shop's: a name that differs only by case."""

from __future__ import annotations

from hitl.tools import tool


@tool
def Refund(order_id: str) -> str:  # the clash with `refund` is the point
    """Another refund."""
    return order_id
