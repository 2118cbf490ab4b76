# CUDA-enabled PyTorch base; runs the DVC pipeline (or one stage) as a non-root user.
#   docker build -t ssl-pipeline .
#   docker run --gpus all --ipc=host -v "$PWD":/app ssl-pipeline dvc repro
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# git: DVC needs it; dataset-fashion-mnist: the embedded dataset's IDX files.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.* dataset-fashion-mnist=0.0~git* \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 ssl
WORKDIR /app

# Dependencies first (cached layer), the code after.
COPY pyproject.toml README.md ./
COPY pipeline/__init__.py pipeline/__init__.py
RUN pip install --no-cache-dir . && pip uninstall -y ssl-pipeline

COPY --chown=ssl:ssl . .
# A mounted checkout at /app wins over anything baked in: the code you run is the code you see.
ENV PYTHONPATH=/app \
    MPLBACKEND=Agg
RUN git config --system --add safe.directory /app
USER 1000:1000
CMD ["dvc", "repro"]
