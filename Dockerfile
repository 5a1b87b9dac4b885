FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    CTXGATE_DB=/data/ctxgate.db \
    CTXGATE_HOST=0.0.0.0 \
    CTXGATE_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY capture ./capture
COPY policy ./policy
RUN pip install . \
    && mkdir -p /data /spool \
    && chown 10001:10001 /data /spool

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["ctxgate"]
CMD ["serve"]
