"""A shop's tools: look up an order, refund it (approval above $100), and a flaky rule.

Written only with the public API (`hitl.tools`). The refunds go to a ledger file
(`SHOP_LEDGER`), one JSON line per refund, keyed by the approval id so a retry never
refunds twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel, Field

from hitl.models import ToolPreview
from hitl.tools import ToolContext, ToolError, tool

ORDERS = {"42": 180.0, "7": 35.0}


def _ledger() -> Path:
    return Path(os.environ.get("SHOP_LEDGER", "ledger.jsonl"))


@tool(read_only=True, risk=0)
def lookup_order(order_id: str) -> dict:
    """Look up an order: its id and how much was paid."""
    if order_id not in ORDERS:
        raise ToolError(f"there is no order {order_id}; orders are {', '.join(ORDERS)}")
    return {"order_id": order_id, "paid": ORDERS[order_id]}


class RefundArgs(BaseModel):
    order_id: str = Field(description="The order to refund.")
    amount: float = Field(gt=0, le=10_000, description="Dollars to refund.")
    reason: str = Field(default="", max_length=200)


def _refund_risk(args: RefundArgs, preview: ToolPreview) -> int:
    return 30 if args.amount <= 500 else 90


@tool(
    requires_approval=lambda args: args.amount > 100,
    risk=_refund_risk,
    idempotent=False,
    approval_timeout=3600,
)
def refund(ctx: ToolContext, args: RefundArgs) -> dict:
    """Refund (part of) an order. Refunds over $100 need a person's approval."""
    if args.order_id not in ORDERS:
        raise ToolError(f"there is no order {args.order_id}")
    entry = {"key": ctx.idempotency_key, "order_id": args.order_id, "amount": args.amount}
    with _ledger().open("a") as ledger:
        ledger.write(json.dumps(entry) + "\n")
    return {"refunded": args.amount, "order_id": args.order_id}


@refund.preview
def _(ctx: ToolContext, args: RefundArgs) -> ToolPreview:
    paid = ORDERS.get(args.order_id)
    warnings = []
    if paid is None:
        warnings.append(f"order {args.order_id} does not exist")
    elif args.amount > paid:
        warnings.append(f"more than was paid (${paid:.2f})")
    return ToolPreview(
        summary=f"refund ${args.amount:.2f} on order {args.order_id}",
        details=f"order {args.order_id}: paid ${paid or 0:.2f}; refund ${args.amount:.2f}\n"
        f"reason: {args.reason or '(none given)'}",
        facts={"paid": paid, "amount": args.amount},
        warnings=warnings,
    )


def _broken_rule(args: BaseModel) -> bool:
    raise RuntimeError("the rules service is down")


@tool(requires_approval=_broken_rule, risk=40)
def apply_discount(code: str, percent: int = 10) -> dict:
    """Apply a discount code to the next order."""
    return {"code": code, "percent": percent}


@tool(requires_approval=True, risk=20)
def slow_quote(customer: str) -> dict:
    """Send a price quote; its preview asks a slow pricing service first."""
    return {"quoted": customer}


@slow_quote.preview
def _(customer: str) -> str:
    time.sleep(float(os.environ.get("SHOP_PREVIEW_SECONDS", "0")))
    return f"quote for {customer}"
