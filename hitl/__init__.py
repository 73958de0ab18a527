"""Human-in-the-loop approvals for AI agents, built on Temporal."""

__version__ = "0.1.0"
