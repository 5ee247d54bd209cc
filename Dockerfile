# syntax=docker/dockerfile:1
#
# One image for every docrecovery service: the Celery workers, beat and Flower
# (see docker-compose.yml for the commands). Nothing secret is baked in: the broker
# URL (REDIS_URL) and Flower's credentials come from the environment at run time.
#
#   docker build -t docrecovery .
#
# Two stages: `build` turns the project and every dependency into wheels (with a
# compiler at hand, for dependencies that ship no wheel for this platform); the
# final stage installs those wheels offline and carries
# neither the compiler nor the source tree.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN apt-get update \
 && apt-get install --yes --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first, from pyproject.toml alone (empty stand-in packages let it
# build), so that editing the source does not download and rebuild all of them.
COPY pyproject.toml ./
RUN mkdir recovery tasks \
 && touch recovery/__init__.py tasks/__init__.py \
 && pip wheel --wheel-dir /wheels ".[pdf,docx,flower,dashboard]" \
 && rm -rf recovery tasks build ./*.egg-info /wheels/docrecovery-*.whl

# Then the project itself (.dockerignore admits only what the package needs).
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="docrecovery" \
      org.opencontainers.image.description="Celery document pipeline with failure tracking and recovery"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Where state lives. Only documents under DOCRECOVERY_ROOTS are processed (mount them
# there); failure events that could not reach Redis wait in the spool to be replayed.
# Beat keeps its schedule in Redis (RedBeat, see celeryconfig.py).
ENV DOCRECOVERY_ROOTS=/data/documents \
    DOCRECOVERY_SPOOL_DIR=/data/spool

RUN groupadd --system --gid 10001 docrecovery \
 && useradd --system --uid 10001 --gid docrecovery \
            --home-dir /home/docrecovery --create-home --shell /usr/sbin/nologin docrecovery

# Install from the build stage's wheels only (no index), through a bind mount, so
# the wheels do not stay in a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "docrecovery[pdf,docx,flower,dashboard]"

# All state lives under /data, owned by the service user (a named volume mounted
# here starts with this ownership). The code stays read-only to that user, and a
# relative path written by mistake fails loudly instead of vanishing with the container.
RUN mkdir -p /data/documents /data/spool \
 && chown -R docrecovery:docrecovery /data
VOLUME ["/data/documents", "/data/spool"]

WORKDIR /app
# Flower runs ./flowerconfig.py: the docrecovery_* metrics on Flower's /metrics.
COPY flowerconfig.py ./
USER docrecovery:docrecovery

# Flower, when this image runs `celery -A tasks flower --port=5555`; the dashboard,
# when it runs `docrecovery dashboard --port 5580`; the metrics exporter, when it runs
# `docrecovery metrics --port 9808`.
EXPOSE 5555 5580 9808

CMD ["celery", "-A", "tasks", "worker", "--loglevel=INFO"]
