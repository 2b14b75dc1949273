# Ferry's container image: a static binary (no cgo, no libc) on distroless/static, running as a non-root user,
# with the embedded Kafka's data dir as a volume and the admin port for probes and Prometheus.
#
#   docker build --build-arg VERSION="$(git describe --tags --always)" -t ferry:dev .
#   docker run --rm -p 1883:1883 -p 9090:9090 -v ferry-data:/var/lib/ferry -e FERRY_AUTH_ANONYMOUS=true ferry:dev
#
# The image listens on 0.0.0.0 (a container's loopback is useless), so it starts only with authentication
# configured (FERRY_AUTH_PASSWORDS, FERRY_AUTH_JWT_KEY or FERRY_AUTH_JWKS and a mounted file) or an explicit
# FERRY_AUTH_ANONYMOUS=true. Every setting is a FERRY_<NAME> variable or a flag after the image name
# (docs/operations.md, "Container image"). scripts/check-image.sh checks this file without Docker: it runs the
# build stage's `go build` line and checks the structure below.

ARG GO_VERSION=1.26.8

# --- build -------------------------------------------------------------------------------------------------------
FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ferry ./cmd/ferry
# The data dir, owned by the runtime user (distroless "nonroot", 65532), so that a fresh volume is writable.
RUN mkdir -p /out/var/lib/ferry && chown 65532:65532 /out/var/lib/ferry

# --- runtime -----------------------------------------------------------------------------------------------------
# distroless/static: CA certificates (for Kafka over TLS with public CAs), /etc/passwd with nonroot, tzdata; no
# shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ferry /usr/local/bin/ferry
COPY --from=build --chown=65532:65532 /out/var/lib/ferry /var/lib/ferry
USER 65532:65532
WORKDIR /var/lib/ferry
ENV FERRY_MQTT=tcp://0.0.0.0:1883 \
    FERRY_ADMIN=0.0.0.0:9090 \
    FERRY_DATA_DIR=/var/lib/ferry \
    FERRY_LOG_FORMAT=json
VOLUME ["/var/lib/ferry"]
# MQTT, and the admin HTTP port: /healthz (liveness), /readyz (readiness), /metrics.
EXPOSE 1883 9090
ENTRYPOINT ["/usr/local/bin/ferry"]
