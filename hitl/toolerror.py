"""`ToolError`, on its own so the tool API (`hitl.tools`) and the toolkits' helpers
(`hitl.toolkits.workspace`) both raise it without importing each other."""


class ToolError(ValueError):
    """A call that can't be carried out as asked: nothing happened, the message goes to the
    model. Raise it from a tool (or its preview) for a clean refusal."""
