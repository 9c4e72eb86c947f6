# syntax=docker/dockerfile:1
# Weldr Agent: one image per project machine (Fly.io, linux/amd64).
#
#   make image                         # here: buildah, with a base made locally (see below)
#   docker build --platform linux/amd64 -t weldr-agent .   # anywhere with a registry
#
# Run it as Fly does (README.md, "Image"): privileged, the volume at /dev/weldr_env_vol, the API
# on 8080 and previews on 3000-3019, the settings in an env file; PID 1 is the agent itself:
#   podman run --privileged --runtime runc -v weldr_env_vol:/dev/weldr_env_vol \
#     -p 8080:8080 -p 3000-3019:3000-3019 --env-file agent.env weldr-agent
#
# The base: production (`fly deploy`, `docker build`) pulls debian:bookworm-slim from Docker
# Hub. Machines without a registry (ours: CI, development) make the same thing from Debian's
# packages with mmdebstrap (scripts/build-image.sh: minbase bookworm, documentation excluded as
# in the official slim images) and store it under this name. Debian's python3 of bookworm is
# 3.11, the version requirements.lock is made for.
#
# The install steps are scripts/setup.sh, the same script `make test` (and so CI) runs; CI also
# builds this image and boots it (tests/deploy). JuiceFS mounts and containers need root with
# FUSE and namespaces: `--privileged` under Docker/Podman; a Fly Machine is a whole VM where the
# agent is root already.
FROM --platform=linux/amd64 debian:bookworm-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LANG=C.UTF-8 \
    NODE_ENV=production \
    PORT=8080 \
    WELDR_ENV_VOL=/dev/weldr_env_vol \
    WORKSPACE_BASE=/workspace

WORKDIR /app

# Dependencies first, and only what installs them, so that a code change reuses this layer.
# build_ca: a certificate bundle for a build behind a TLS-inspecting proxy (ours: CI's egress);
# a secret mount, so it is never stored in the image. Without it, the system's certificates.
COPY requirements.lock ./
COPY scripts/setup.sh scripts/
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then \
        export PIP_CERT=/run/secrets/build_ca NPM_CONFIG_CAFILE=/run/secrets/build_ca; \
    fi \
    && scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.cache /root/.npm

COPY . .
# the SDK and the `weldr` command (sdk/; its dependencies are in the layer above, pip fetches
# only its build backend), then the design's layout: the system scripts in /usr/local/bin, their
# templates in /etc.
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
    && .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --no-cache-dir ./sdk \
    && rm -rf sdk/build /root/.cache \
    && install -m 0755 scripts/*.sh /usr/local/bin/ \
    && find scripts -maxdepth 1 \( -name '*.yml' -o -name '*.yaml' \) \
        -exec install -m 0644 {} /etc/ \; \
    && mkdir -p /workspace

EXPOSE 8080 3000-3019
STOPSIGNAL SIGTERM
CMD ["/app/.venv/bin/python", "manage.py", "serve"]
