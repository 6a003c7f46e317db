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
# A self-contained venv: the runtime stage copies it and needs no compiler or pip cache.
RUN python -m venv /opt/chargegraph \
 && /opt/chargegraph/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/chargegraph/bin/pip install --no-cache-dir .

FROM python:3.11-slim
# Non-root; its home is the data volume, so a named volume starts out owned by it.
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
# urlopen raises on 503 (store down) and on connection errors: both mark the container
# unhealthy. The port follows CHARGEGRAPH_PORT when that is overridden.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CHARGEGRAPH_PORT', '8000'), timeout=2)"]
# --host repeats CHARGEGRAPH_HOST to keep the command explicit; the environment also covers
# the OCPP port and `docker run … chargegraph demo`.
CMD ["chargegraph", "serve", "--host", "0.0.0.0"]
