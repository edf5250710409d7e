# One image for every role of realtime-ai: producer, producer daemon, worker, api, tracker, sink, status.
# Same steps as the README's install: system packages, then `pip install` of this project.
# torch from PyPI is the CUDA build on x86-64 Linux, so the same image runs on GPU hosts
# (with the NVIDIA container runtime) and on CPU-only hosts.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RTAI_REDIS_URL=redis://redis:6379/0 \
    RTAI_WEIGHTS_DIR=/weights

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg redis-tools \
 && rm -rf /var/lib/apt/lists/*

# The whole build context, less what .dockerignore leaves out (tests, dev kit, benchmarks, caches):
# pyproject.toml alone says which packages and data files are installed, so a new package needs no
# second list here (tests/integration/test_image_build.py builds this exact context).
WORKDIR /src
COPY . .
RUN pip install . && rm -rf /src/build

# Run as an unprivileged user: whoever can write to the fleet's Redis controls its workers,
# but not the container's root. /weights is the named volume that keeps pulled weights.
RUN useradd --create-home --uid 10001 rtai && mkdir -p /weights && chown rtai /weights
USER rtai
WORKDIR /home/rtai

ENTRYPOINT ["rtai"]
CMD ["--help"]
