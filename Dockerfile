# The tested stack in an image: the same Python (3.11) and the exact versions of constraints.txt that
# scripts/run.sh installs and the tests run (torch 2.14.1 included). The mounted checkout's code runs.
#   docker build -t ssl-pipeline .
#   docker run --gpus all --ipc=host --user "$(id -u):$(id -g)" -v "$PWD":/app ssl-pipeline dvc repro
#   docker run --gpus all --ipc=host ssl-pipeline dvc repro        (no volume: the image's own copy, uid 1000)
#
# BASE: a CUDA-capable base. PyPI's torch wheel carries its CUDA libraries (the nvidia-* wheels pinned in
# constraints.txt) and the GPU driver comes from the host (--gpus all), so no nvidia/cuda image is needed:
# python:3.11-slim-bookworm is the tests' Python and Debian release, and much smaller. Any Debian-based
# image with python3 and its venv module works (tests/container/run.sh builds on a debootstrapped bookworm).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# git: DVC needs it; dataset-fashion-mnist: the embedded dataset's IDX files.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.* dataset-fashion-mnist=0.0~git* \
    && rm -rf /var/lib/apt/lists/*

# Extra pip options for the build only (package sources, CA bundle), e.g. a local index:
#   --build-arg PIP_OPTS="--extra-index-url file:///opt/pypi/simple --cert /etc/ssl/certs/ca-certificates.crt"
# An ARG is not an ENV: nothing of the build host's pip setup stays in the image.
ARG PIP_OPTS=""

# TORCH_CUDA: which CUDA build of the pinned torch. cu13 (default): PyPI's wheel, CUDA 13, needs an NVIDIA
# driver >= 580 on the host. A host with an older driver (>= 525) takes the previous CUDA major from
# PyTorch's index, e.g. --build-arg TORCH_CUDA=cu126 (or cu128, cu129: whichever that index has for the pin).
ARG TORCH_CUDA=cu13

# A venv works the same on a python:* image and on Debian's python3 (whose system pip is externally managed).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# The user exists before /app does, so /app is its own: a run without a volume can write data/ and models/.
RUN useradd --create-home --uid 1000 ssl \
    && chmod 1777 /home/ssl \
    && git config --system --add safe.directory /app
WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY pipeline/__init__.py pipeline/__init__.py
# Every version comes from constraints.txt (pip cannot see that, hence DL3013); the project itself is
# uninstalled again: the mounted checkout is what runs (PYTHONPATH=/app).
# hadolint ignore=DL3013,SC2086
RUN python3 -m venv "$VIRTUAL_ENV" \
    && if [ "$TORCH_CUDA" = cu13 ]; then TORCH_OPTS=""; \
       else TORCH_OPTS="--index-url https://download.pytorch.org/whl/$TORCH_CUDA"; fi \
    && pip install --no-cache-dir $PIP_OPTS $TORCH_OPTS -c constraints.txt torch torchvision \
    && pip install --no-cache-dir $PIP_OPTS -c constraints.txt . \
    && pip uninstall -y ssl-pipeline \
    && rm -rf pipeline \
    && chown ssl:ssl /app

# Non-root. Under `docker run --user "$(id -u):$(id -g)"` the uid may have no passwd entry: HOME and every
# cache (pip, torch hub, matplotlib, DVC's site cache, git) then point at world-writable places.
ENV HOME=/home/ssl \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    PIP_CACHE_DIR=/tmp/.cache/pip \
    TORCH_HOME=/tmp/.cache/torch \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    MPLBACKEND=Agg \
    PYTHONPATH=/app

COPY --chown=ssl:ssl . .
USER 1000:1000
# .git is not copied (.dockerignore): DVC needs a repository, so the image's copy gets its own (as
# scripts/run.sh does for a tarball). A mounted checkout brings its own .git and hides this one.
RUN git init -q && git add -A && git -c user.name=ssl -c user.email=ssl@localhost commit -qm "image copy"
CMD ["dvc", "repro"]
