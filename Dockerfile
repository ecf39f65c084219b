# delivery-server as ECS/Fargate runs it: one process, settings from the environment.
# Build: docker build -t delivery-server .   Run: docker compose -f docker/compose.yml up
# The dependencies are the production lock's, hash-checked (make lock regenerates it);
# only what the wheel is built from is copied in: no stand_in/, bench/ or tests/.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY delivery_server ./delivery_server
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
RUN groupadd --system --gid 10001 delivery \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --create-home delivery
# The locked dependencies first: their layer is rebuilt only when the lock changes.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
# Numeric, so that an orchestrator's "run as non-root" check can verify it.
USER 10001:10001
WORKDIR /app
# Inside a container the metrics/health port must be reachable by the load balancer and
# Prometheus; outside one the default stays loopback-only.
ENV DELIVERY_HTTP_HOST=0.0.0.0 \
    DELIVERY_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# ECS sends SIGTERM and SIGKILL stopTimeout later (30 s by default, DELIVERY_STOP_TIMEOUT):
# in-flight sends get DELIVERY_SHUTDOWN_GRACE (25 s), then the cancelled rest get
# DELIVERY_CANCEL_DEADLINE (5 s) to hand their messages back; start-up refuses a sum
# over the stop timeout. Raise DELIVERY_STOP_TIMEOUT with the task definition's.
STOPSIGNAL SIGTERM
ENTRYPOINT ["delivery-server"]
CMD ["run"]
