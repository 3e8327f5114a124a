# pot operator: kopf handlers only. No torch, no web3 in this image: it is
# installed without dependencies and given just what pot.operator imports.
# Build from the repository root: docker build -f images/operator.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/pot
COPY pyproject.toml README.md ./
COPY pot ./pot
COPY operator ./operator
COPY trainer ./trainer
COPY validator ./validator
COPY settlement ./settlement
COPY localcluster ./localcluster
COPY contracts ./contracts
RUN /opt/pot/bin/pip install --no-cache-dir --no-deps . \
 && /opt/pot/bin/pip install --no-cache-dir \
      "kopf==1.45.2" "kubernetes==37.0.2" "aiohttp==3.14.5" "prometheus-client==0.26.0" \
      "typer==0.29.2" "rich==15.0.0" "pyyaml==6.0.3" "cel-python==0.5.0" "eth-account==0.14.0"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/pot /opt/pot
ENV PATH=/opt/pot/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "pot.operator"]
