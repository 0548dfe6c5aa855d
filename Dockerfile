# svcaudit operator image. Build: `make image` (or docker build -t svcaudit:dev .).
# `make image` (e2e/docker/image.py) uses this file as it is, with the public base where it
# can be pulled, else an equivalent base made from Debian's packages (PYTHON_IMAGE), and the
# pinned wheels fetched on the host (PIP_OFFLINE=1): see docs/install.md.
#
# The base is pinned by version; pin it by digest too for reproducible builds:
#   docker pull python:3.11.7-slim-bookworm && docker inspect --format '{{index .RepoDigests 0}}' ...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# PIP_OFFLINE=1 (make image sets it): install only from requirements/wheels, fetched on the
# host beforehand, so the build needs no network (`docker build --network none`).
ARG PIP_OFFLINE=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/ requirements/
# Dependencies first (a layer that survives code changes), exactly the pinned versions.
RUN python -m venv /opt/svcaudit \
 && /opt/svcaudit/bin/pip install --require-virtualenv \
      ${PIP_OFFLINE:+--no-index --find-links requirements/wheels} -r requirements/image.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/svcaudit/bin/pip install --no-deps --constraint requirements/image.txt \
      ${PIP_OFFLINE:+--no-index --find-links requirements/wheels} . \
 && /opt/svcaudit/bin/pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="svcaudit" \
      org.opencontainers.image.description="Audits Kubernetes service discovery" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/svcaudit/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/svcaudit /opt/svcaudit
# A fixed numeric non-root user (matches runAsUser in deploy/ and the chart).
RUN groupadd --gid 10001 svcaudit \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin svcaudit
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["svcaudit"]
CMD ["run"]
