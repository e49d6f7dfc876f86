# One image for every Footfall role: `footfall gateway|sink|dashboard|bench ...`.
#
#   docker-compose build --no-cache          (or: docker build -t footfall:latest .)
#   docker run --rm footfall:latest gateway --help
#
# Stages:
#   build    compilers + pip: builds wheels for the project and every dependency, then
#            installs them into the virtualenv /opt/venv.
#   runtime  slim Python + /opt/venv only: no compiler, no pip cache, non-root user.
#   debug    runtime + py-spy, for profiling (`--target debug`, needs cap SYS_PTRACE).
#   the last stage is runtime again, so a plain `docker build .` gives the production image.
#
# Works with the classic builder and BuildKit alike (no RUN --mount), because the
# original flow builds through `docker-compose build`.

ARG PYTHON_VERSION=3.11
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A C toolchain only here: wheels exist for most dependencies on x86-64, but not for
# every architecture (arm64 hosts build hdrhistogram, uvloop... from source).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Build context is an allow-list (.dockerignore): metadata first, then the packages.
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY footfall/ footfall/
COPY gateway/ gateway/
COPY sink/ sink/
COPY bench/ bench/
COPY dashboard/ dashboard/
COPY stack/ stack/

# 1. Wheels for the project (from pyproject.toml, package data included) with the role extras
#    (one image serves every role), each dependency at its version in requirements.lock.
# 2. Install them offline into /opt/venv: the exact set that was just built.
# 3. The health probe, as a command on PATH.
# DL3013 (pin versions): requirements.lock pins every version; step 2 installs the wheels of step 1, offline.
# hadolint ignore=DL3013
RUN pip wheel --wheel-dir /wheels -c requirements.lock ".[bench,dashboard]" \
 && pip install --no-index --find-links /wheels -c requirements.lock "footfall[bench,dashboard]" \
 && footfall --version
COPY deploy/healthcheck.py /opt/venv/bin/footfall-healthcheck
RUN chmod 0755 /opt/venv/bin/footfall-healthcheck

# ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime

LABEL org.opencontainers.image.title="footfall" \
      org.opencontainers.image.description="Footfall: HTTP gateway -> Kafka -> files exactly once -> dashboard" \
      org.opencontainers.image.licenses="MIT"

# Fixed ids, so a bind-mounted record directory can be chown'ed to match on the host.
# /data/{records,dashboard,runs} exist and belong to footfall, so a fresh named volume
# mounted there inherits that owner (Docker copies the image's directory on first use).
RUN groupadd --system --gid 10001 footfall \
 && useradd --system --uid 10001 --gid footfall --create-home --home-dir /home/footfall \
            --shell /usr/sbin/nologin footfall \
 && mkdir -p /data/records /data/dashboard /data/runs \
 && chown footfall:footfall /data/records /data/dashboard /data/runs

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FOOTFALL_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/footfall

# gateway 8080, dashboard 8050, sink metrics 9100 (the defaults used in docker-compose.yml)
EXPOSE 8080 8050 9100

# Every role shuts down gracefully on SIGTERM (docs/operations.md, "Upgrading").
STOPSIGNAL SIGTERM

# Each compose service overrides the URL with its own port and /readyz; this default
# fits `docker run ... footfall gateway --host 0.0.0.0 --port 8080`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["footfall-healthcheck"]

ENTRYPOINT ["footfall"]
CMD ["--help"]

# ---------------------------------------------------------------------------
FROM runtime AS debug

# py-spy reads another process's memory: run this target with `cap_add: [SYS_PTRACE]`.
# Its version is the one in requirements.lock (tests/core/test_packaging.py keeps them equal).
USER 0:0
RUN pip install --no-cache-dir py-spy==0.4.3
USER 10001:10001

# ---------------------------------------------------------------------------
# The default target (last stage) is the production image.
FROM runtime AS production
