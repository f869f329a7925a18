# One image for every Quarry worker; the command picks the worker:
#   docker run quarry python -m services.submit.main
FROM python:3.11-slim

# MALLOC_ARENA_MAX: glibc's per-thread malloc arenas otherwise keep the upload threads' buffers.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MALLOC_ARENA_MAX=2
WORKDIR /app

# WordNet 3.0 for the evaluation's METEOR metric (shared/evaluation/metrics.py), from Debian.
RUN apt-get update && apt-get install -y --no-install-recommends wordnet-base && rm -rf /var/lib/apt/lists/*

# Dependencies first (pinned in pyproject.toml), so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY shared/__init__.py shared/__init__.py
COPY services/__init__.py services/__init__.py
COPY infra/__init__.py infra/__init__.py
RUN pip install '.[local]'

COPY shared shared
COPY services services
COPY infra infra
COPY profiles.yaml profiles.yaml
RUN pip install --no-deps . && useradd --create-home --uid 10001 quarry
USER quarry

CMD ["python", "-m", "services.preprocess.main"]
