# One image for every role of realtime-ai: producer, worker, status, subscribe.
# Same steps as the README's install: system packages, then `pip install` of this project.
# torch from PyPI is the CUDA build on x86-64 Linux, so the same image runs on GPU hosts
# (with the NVIDIA container runtime) and on CPU-only hosts.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RTAI_REDIS_URL=redis://redis:6379/0

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg redis-tools \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY worker ./worker
COPY realtime_ai ./realtime_ai
COPY control ./control
RUN pip install .

# Run as an unprivileged user: whoever can write to the fleet's Redis controls its workers,
# but not the container's root.
RUN useradd --create-home --uid 10001 rtai
USER rtai

ENTRYPOINT ["rtai"]
CMD ["--help"]
