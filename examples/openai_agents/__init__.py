"""A support agent written with the OpenAI Agents SDK, run on Temporal, its refunds and
emails approved through the gate (`make example-openai-agents`)."""
