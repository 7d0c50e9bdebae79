FROM python:3.11-slim
# Pinned: the uv that wrote uv.lock; bump both together.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
# The beat in the control service writes its schedule file in the working directory.
RUN useradd --create-home iotsched && chown iotsched /app
USER iotsched
CMD ["iotsched", "--help"]
