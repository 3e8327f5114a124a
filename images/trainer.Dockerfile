# pot trainer: torch with CUDA and NCCL on a CUDA runtime base. torch's wheels
# bundle the CUDA user-space libraries and NCCL; the NVIDIA container toolkit
# injects the driver at run time.
# Build from the repository root: docker build -f images/trainer.Dockerfile .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04

FROM ${CUDA_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/pot
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pot ./pot
COPY operator ./operator
COPY trainer ./trainer
COPY validator ./validator
COPY settlement ./settlement
COPY localcluster ./localcluster
COPY contracts ./contracts
# torch first and exactly: PyPI's linux x86_64 wheel of 2.13.0 is the CUDA build.
RUN /opt/pot/bin/pip install --no-cache-dir "torch==2.13.0" \
 && /opt/pot/bin/pip install --no-cache-dir .

FROM ${CUDA_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --create-home --shell /usr/sbin/nologin pot
COPY --from=build /opt/pot /opt/pot
ENV PATH=/opt/pot/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8090 29500
ENTRYPOINT ["python", "-m", "pot.trainer"]
