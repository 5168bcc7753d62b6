# One image for the stack's Python services: `ablate worker`, `mlflow server` and
# `optuna-dashboard` all come from the same pinned install, so every command in
# docker-compose.yml exists in it. Build the GPU variant for workers with EXTRAS=gpu,service.
FROM python:3.11-slim

ARG EXTRAS=service
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY studies ./studies
RUN pip install ".[${EXTRAS}]"

# Never run the services as root.
RUN useradd --create-home --uid 1000 ablate && mkdir -p /mlflow/artifacts /mlflow/auth \
    && chown -R ablate /mlflow
USER ablate
WORKDIR /home/ablate

CMD ["ablate", "--help"]
