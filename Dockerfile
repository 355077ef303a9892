# chunkvault agent image. Two stages: `build` turns this checkout into wheels (or takes
# the wheelhouse in ./wheels, for air-gapped sites: `make image-offline` makes one) and
# installs them into a venv; the runtime stage gets only that venv: no compiler, no source
# tree, no package index.
#   docker build -t chunkvault:latest .                       (online, python:3.11-slim)
#   make image-offline                                        (no registry, no network)
# Run: state in /var/lib/chunkvault (a volume, UID 10001 must own it), watched tree in
# /data, config at /etc/chunkvault/chunkvault.yaml, passphrase from a secret file
# (CHUNKVAULT_PASSPHRASE_FILE=/run/secrets/chunkvault_passphrase) or CHUNKVAULT_PASSPHRASE.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Lets `make image-offline` remove this stage's image once the runtime stage is built.
LABEL org.chunkvault.stage=build
WORKDIR /src
COPY . .
# pip's own cache is not wanted in a layer; bytecode is compiled once at install.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! ls wheels/chunkvault-*.whl >/dev/null 2>&1; then \
        python3 -m pip wheel --wheel-dir wheels . ; \
    fi \
 && python3 -m venv /opt/chunkvault \
 && /opt/chunkvault/bin/pip install --no-index --find-links wheels wheels/chunkvault-*.whl \
 && /opt/chunkvault/bin/chunkvault --version

FROM ${PYTHON_IMAGE}
# A fixed UID/GID, so bind-mounted state and watch dirs can be prepared on the host
# (`install -d -o 10001 -g 10001 STATE`) and Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 chunkvault \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/chunkvault --shell /usr/sbin/nologin chunkvault \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/chunkvault \
 && install -d -o 10001 -g 10001 -m 0755 /data /etc/chunkvault
COPY --from=build /opt/chunkvault /opt/chunkvault
ENV PATH=/opt/chunkvault/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CHUNKVAULT_CONFIG=/etc/chunkvault/chunkvault.yaml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/chunkvault"]
WORKDIR /var/lib/chunkvault
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python3", "-m", "chunkvault.healthcheck"]
# Exec form: chunkvault is PID 1 and gets docker stop's SIGTERM itself (a graceful stop).
ENTRYPOINT ["chunkvault"]
CMD ["run"]
