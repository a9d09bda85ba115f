# The modelops operator. Build: `docker build -t modelops .` (or `podman build`); any base
# with python3 >= 3.11 and its venv module will do: --build-arg BASE_IMAGE=...
# Run outside a cluster: `docker run -v KUBECONFIG_FILE:/kubeconfig:ro -e KUBECONFIG=/kubeconfig modelops`
# (the file readable by uid 65532); in a cluster it uses its ServiceAccount. Arguments after the
# image go to `modelops run`. /metrics, /healthz and /readyz are served on port 8080.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/modelops
WORKDIR /src
# The runtime dependencies first, in a layer of their own: a change of the code alone reuses it.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > requirements.txt \
 && /opt/modelops/bin/python -m pip install -r requirements.txt
COPY README.md ./
COPY operator ./operator
# The package as a wheel, then that wheel into the venv; pip and setuptools leave it (not needed to run).
RUN /opt/modelops/bin/python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/modelops/bin/python -m pip install --no-deps /wheels/modelops-*.whl \
 && /opt/modelops/bin/python -m pip check \
 && /opt/modelops/bin/python -m pip uninstall -y -q pip setuptools \
 && /opt/modelops/bin/modelops --help >/dev/null

FROM ${BASE_IMAGE}
COPY --from=builder /opt/modelops /opt/modelops
ENV PATH=/opt/modelops/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Any numeric uid will do; 65532 is the customary "nonroot". No shell, home or passwd entry needed.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["modelops", "run"]
