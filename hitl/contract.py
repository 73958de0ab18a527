"""Names other code relies on: signals, queries, activities, search attributes, memo keys.

Kept in one place so the workflow, the activities, the worker and the reviewer's
tools can't drift apart.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKFLOW_NAME = "AgentWorkflow"
DEFAULT_TASK_QUEUE = "hitl-agents"

SIGNAL_APPROVE = "approve"
SIGNAL_REJECT = "reject"
SIGNAL_MODIFY = "modify"
SIGNAL_REVOKE = "revoke"
UPDATE_DECIDE = "decide"
"""One update for every decision kind: the outcome comes back in one round trip, and a
validator keeps malformed decisions out of history."""
QUERY_APPROVALS = "approvals"
QUERY_STATUS = "status"

ACTIVITY_LLM = "llm_next_step"
ACTIVITY_PREVIEW = "preview_tool"
ACTIVITY_RUN_TOOL = "run_tool"
ACTIVITY_NOTIFY = "notify_approval"
"""Version 1 and early version 2 runs: the pending approval's record only."""
ACTIVITY_NOTIFY_EVENT = "notify_reviewers"
ACTIVITY_DESCRIBE_TOOLS = "describe_tools"
ACTIVITY_CHECK_TOOL = "check_tool"
ACTIVITY_VERIFY_DECISION = "verify_decision"
ACTIVITY_VERIFY_START = "verify_start"

STATE_KEY = SearchAttributeKey.for_keyword("HitlState")
PENDING_KEY = SearchAttributeKey.for_int("HitlPendingApprovals")
APPROVAL_IDS_KEY = SearchAttributeKey.for_keyword_list("HitlApprovalIds")
"""Every approval id of the run, so any approval is found with one visibility query."""
UPDATED_AT_KEY = SearchAttributeKey.for_datetime("HitlUpdatedAt")
"""When the run last published a change to its approvals (the workflow's clock, so the
server's): the review API's event feed reads only the runs changed since it last looked.
Set only by runs whose worker saw it registered when the run started (`hitl.gate`)."""
SEARCH_ATTRIBUTES = (STATE_KEY, PENDING_KEY, APPROVAL_IDS_KEY, UPDATED_AT_KEY)

MEMO_PENDING = "hitl_pending"
MEMO_TASK = "hitl_task"
