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
# `chargegraph healthcheck` reads the settings `serve` reads (the environment, then
# /data/.env), so it asks the host and port the server listens on; it exits 1 on a 503
# (the store down), on no answer and on a configuration error. The start period covers
# the longest start: an instance waits up to 30 minutes for another's SQLite migration
# before it listens, and failures inside the period do not count; the first answer ends
# it, and it is probed every 5 s meanwhile (Docker 25+), so a quick start is healthy soon.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30m --start-interval=5s --retries=3 \
  CMD ["chargegraph", "healthcheck"]
# No --host: the interface is CHARGEGRAPH_HOST above, which `docker run -e` or compose
# replaces (an option here would override the user's value, and the health check would
# not see it). The environment also covers the OCPP port and `docker run … chargegraph demo`.
CMD ["chargegraph", "serve"]
