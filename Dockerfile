# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chargegraph chargegraph
COPY domain domain
COPY store store
COPY pubsub pubsub
COPY graph graph
COPY ocpp_bridge ocpp_bridge
RUN python -m venv /opt/chargegraph \
 && /opt/chargegraph/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/chargegraph/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home chargegraph
COPY --from=build /opt/chargegraph /opt/chargegraph
ENV PATH=/opt/chargegraph/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CHARGEGRAPH_DATABASE_URL=sqlite:////data/chargegraph.db \
    CHARGEGRAPH_STATE_DIR=/data/.chargegraph \
    CHARGEGRAPH_HOST=0.0.0.0 \
    CHARGEGRAPH_OCPP_HOST=0.0.0.0
USER chargegraph
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000 9000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["chargegraph", "serve"]
