# genai-collector: OTLP in (gRPC 4317, HTTP 4318), metrics and health on 8888.
#   docker build -t genai-collector .
#   docker run -p 4317:4317 -p 4318:4318 -p 8888:8888 -v $PWD/data:/data genai-collector
# Another config: mount it and pass --config, e.g.
#   docker run -v $PWD/my.yaml:/etc/genai-collector/config.yaml genai-collector
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GENAI_COLLECTOR_GRPC_ENDPOINT=0.0.0.0:4317 \
    GENAI_COLLECTOR_HTTP_ENDPOINT=0.0.0.0:4318 \
    GENAI_COLLECTOR_METRICS_ADDRESS=0.0.0.0:8888 \
    GENAI_COLLECTOR_DB=/data/genai-collector.db \
    GENAI_COLLECTOR_QUEUE_DIR=/data/queue

WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY config ./config
COPY exporters ./exporters
COPY processors ./processors
RUN pip install . && mkdir -p /etc/genai-collector /data
COPY otel-config.yaml /etc/genai-collector/config.yaml
COPY config/examples /etc/genai-collector/examples

RUN useradd --system --uid 10001 --home-dir /data collector && chown -R collector /data
USER 10001
VOLUME ["/data"]
EXPOSE 4317 4318 8888
ENTRYPOINT ["genai-collector"]
CMD ["run", "--config", "/etc/genai-collector/config.yaml"]
