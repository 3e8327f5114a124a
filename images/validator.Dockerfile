# pot validator and its settlement sidecar (one image, two entry points:
# `python -m pot.validator` and `python -m pot.settlement`). Replays run on CPU
# torch here; set ValidatorSet.spec.verification.device=cuda with a CUDA build
# (see trainer.Dockerfile) for GPU replays.
# Build from the repository root: docker build -f images/validator.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN python -m venv /opt/pot
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pot ./pot
COPY operator ./operator
COPY trainer ./trainer
COPY validator ./validator
COPY settlement ./settlement
COPY localcluster ./localcluster
COPY contracts ./contracts
RUN /opt/pot/bin/pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && /opt/pot/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/pot /opt/pot
ENV PATH=/opt/pot/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080 7000 8081
ENTRYPOINT ["python", "-m", "pot.validator"]
