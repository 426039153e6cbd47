# streamfn for the compose demo (compose.yaml). The virtualenv is built by the Makefile's own
# install target, so the image installs exactly what `make run` / `make test` install;
# tests/unit/test_compose.py fails if the two drift apart.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install --yes --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 streamfn \
    && mkdir -p /app /data \
    && chown streamfn:streamfn /app /data

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY --chown=streamfn:streamfn . .
USER streamfn

RUN make .venv/.installed-stamp

# /data (owned by the user above) holds the state database and failure records; compose.yaml
# mounts a named volume there.
ENTRYPOINT ["/app/.venv/bin/streamfn"]
CMD ["run", "examples/compose/streamfn.toml"]
