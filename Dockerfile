FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rcmflow rcmflow
COPY streams streams
COPY tables tables
COPY facade facade
COPY connectors connectors
RUN pip install --no-cache-dir .
# Each worker replica takes the first free table slot under /data (RCMFLOW_WORKER_NAME to pin).
ENTRYPOINT []
