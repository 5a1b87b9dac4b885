# The ctxgate image. A builder stage installs ctxgate and its dependencies into a virtualenv with
# pip; the final stage is python:3.11-slim plus that virtualenv and nothing else: no compiler, no
# pip cache, no source tree, no build context. Every dependency ships a cp311 manylinux wheel
# (asyncpg too, so no libpq), so neither stage compiles anything.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/ctxgate
WORKDIR /src

# The dependencies first, read from pyproject.toml alone: a change to the code then reuses this
# layer (litellm and the rest) instead of downloading them again.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > requirements.txt \
    && /opt/ctxgate/bin/pip install -r requirements.txt

# Then ctxgate itself. `pip check` fails the build if the two steps disagree. Then out of the
# venv go pip and setuptools (nothing installs at run time) and the static files of the LiteLLM
# proxy's admin UI (18 MB of HTML and JavaScript: ctxgate uses litellm as a library, never its
# proxy server).
COPY README.md ./
COPY proxy ./proxy
COPY capture ./capture
COPY policy ./policy
RUN /opt/ctxgate/bin/pip install --no-deps . \
    && /opt/ctxgate/bin/pip check \
    && /opt/ctxgate/bin/pip uninstall --yes --quiet pip setuptools \
    && rm -rf /opt/ctxgate/lib/python3.11/site-packages/litellm/proxy/_experimental/out


FROM python:3.11-slim

# LITELLM_LOCAL_MODEL_COST_MAP: otherwise litellm fetches its cost map from the network at import.
# The bytecode was compiled by pip in the builder; the venv is read-only to the gateway's user,
# so nothing would be written at run time anyway.
ENV PATH=/opt/ctxgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    CTXGATE_HOST=0.0.0.0 \
    CTXGATE_PORT=8080

# uid 10001, named, with /data as its home: what a library writes under $HOME lands on the
# volume, so the root filesystem can be mounted read-only. /spool is for a `store.spool_dir`
# on a disk of its own (mount a volume there); by default the spool is under /data.
RUN groupadd --gid 10001 ctxgate \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin ctxgate \
    && mkdir -p /data /spool \
    && chown 10001:10001 /data /spool

COPY --from=builder /opt/ctxgate /opt/ctxgate

# The working directory is the config's default place: `ctxgate.yaml` in the current directory
# is found with no flag, so a file mounted at /data/ctxgate.yaml is used, and with none the
# gateway runs on its embedded defaults. (CTXGATE_CONFIG is not set: it would make a missing
# file an error.) The store is the default ./ctxgate.db, so /data/ctxgate.db, unless the
# config's store.url or CTXGATE_DB names another (CTXGATE_DB is not set: it would beat store.url).
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# 503 (the store and the spool both refuse, or stopping) fails it; `degraded` (records waiting
# in the spool) passes. It follows CTXGATE_PORT, as the gateway does.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CTXGATE_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["ctxgate"]
CMD ["serve"]
