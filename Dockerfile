# The faultplane image of the docker-compose demo mesh: the control server, the demo
# apps and the load generator all run from it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package first, so that editing the mesh files does not reinstall it.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[postgresql]"

COPY envoy-configs ./envoy-configs

CMD ["faultplane", "serve", "--mesh", "envoy-configs/mesh.yaml"]
