"""The reference agent's activities: the model call (and the offline scripted model).

The gate's activities (tools, notifications, verification) are the library's
(`hitl.activities`), registered by `hitl.plugin.HitlPlugin`.
"""

from activities.llm import llm_next_step

ACTIVITIES = [llm_next_step]

__all__ = ["ACTIVITIES", "llm_next_step"]
