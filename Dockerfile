FROM python:3.11-slim
# Pinned: the uv that wrote uv.lock; bump both together.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev
# NUMBA_CACHE_DIR: the compiled detector kernel's cache (scheduler/jit.py), writable by the
# service user, where the source's __pycache__ is not.
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/app/.numba-cache
# The beat in the control service writes its schedule file in the working directory.
RUN useradd --create-home iotsched && chown iotsched /app
USER iotsched
# Compile the kernel once here: each process then loads it (a host with another CPU
# compiles it again once, at its first worker's start, before any reading).
RUN python -c "import scheduler.detection"
CMD ["iotsched", "--help"]
