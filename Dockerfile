# Weldr Agent: one image per project machine (Fly.io, linux/amd64).
#
#   docker build --platform linux/amd64 -t weldr-agent .
#   docker run --privileged -p 8080:8080 -p 3000-3019:3000-3019 \
#     -v weldr_env_vol:/dev/weldr_env_vol --env-file agent.env weldr-agent
#
# The install steps are scripts/setup.sh, the same script `make test` (and so CI) runs: what CI
# proves installs here too. JuiceFS mounts and containers need root with FUSE and namespaces:
# `--privileged` under Docker; a Fly Machine is a whole VM where the agent is root already.
FROM --platform=linux/amd64 python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NODE_ENV=production \
    PORT=8080 \
    WELDR_ENV_VOL=/dev/weldr_env_vol \
    WORKSPACE_BASE=/workspace

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY requirements.lock ./
COPY scripts/ scripts/
RUN scripts/setup.sh && rm -rf /var/lib/apt/lists/* /root/.cache

COPY . .
# the design's layout: the system scripts in /usr/local/bin, their templates in /etc.
RUN install -m 0755 scripts/*.sh /usr/local/bin/ \
    && find scripts -maxdepth 1 \( -name '*.yml' -o -name '*.yaml' \) \
        -exec install -m 0644 {} /etc/ \; \
    && mkdir -p /workspace

EXPOSE 8080 3000-3019
STOPSIGNAL SIGTERM
CMD ["/app/.venv/bin/python", "manage.py", "serve"]
