"""The API's routers, one per resource: approvals, runs, events, and the inbox."""
