# delivery-server as ECS/Fargate runs it: one process, settings from the environment.
# Build (README "Deploying on AWS" pushes it to ECR):
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" -t delivery-server:0.1.0 .
# Run locally: docker compose -f docker/compose.yml up
# The dependencies are the production lock's, hash-checked (make lock regenerates it);
# only what the wheel is built from is copied in: no stand_in/, bench/ or tests/.
# The Python of CI (tests/unit/test_dockerfile.py compares it with the one running them).
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY delivery_server ./delivery_server
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
# OCI labels: the release and the commit it was built from (build arguments).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="delivery-server" \
      org.opencontainers.image.description="Bulk personalized email delivery: MySQL jobs, SQS fan-out, SES sends" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
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
# The port is the server's own setting (DELIVERY_HTTP_PORT, 8080 by default). The ECS task
# definition (infra/) repeats this exact command: ECS ignores an image's HEALTHCHECK.
HEALTHCHECK --interval=15s --timeout=3s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DELIVERY_HTTP_PORT', '8080') + '/healthz', timeout=2)"]
# ECS sends SIGTERM and SIGKILL stopTimeout later (30 s by default, DELIVERY_STOP_TIMEOUT):
# in-flight sends get DELIVERY_SHUTDOWN_GRACE (25 s), then the cancelled rest get
# DELIVERY_CANCEL_DEADLINE (5 s) to hand their messages back; start-up refuses a sum
# over the stop timeout. infra/ derives the task definition's stopTimeout from the same.
STOPSIGNAL SIGTERM
ENTRYPOINT ["delivery-server"]
CMD ["run"]
