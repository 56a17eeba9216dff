# syntax=docker/dockerfile:1
# Multi-stage build: compile the daemons with the MariaDB client library and
# the client without any database, ship them on a slim runtime as a non-root user.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-libmysqlclient-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Two invocations, because Cargo unifies features across the packages of one:
# the daemons (and the one-process server, with MySQL) together, then the
# client alone, so `filesync` links no diesel and no MariaDB library. No
# shipped package turns on test code; .ci/shipped-builds.sh checks both lines.
RUN cargo build --release --locked --bins -p filesync-http-api -p filesync-tcp-sync -p filesync-server --features filesync-server/mysql \
 && cargo build --release --locked --bins -p filesync-client \
 && mkdir /out \
 && cp target/release/filesync-http target/release/filesync-tcp target/release/filesync-server target/release/filesync /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/filesync --create-home --shell /usr/sbin/nologin filesync
COPY --from=build /out/ /usr/local/bin/
COPY migrations /usr/share/filesync/migrations
COPY filesync.sql /usr/share/filesync/filesync.sql
USER filesync
WORKDIR /var/lib/filesync
ENV FILESYNC_DATA_DIR=/var/lib/filesync \
    FILESYNC_STORAGE=/var/lib/filesync/chunks \
    FILESYNC_HTTP_ADDR=0.0.0.0:8080 \
    FILESYNC_TCP_ADDR=0.0.0.0:7070 \
    FILESYNC_TCP_ADMIN_ADDR=0.0.0.0:7071
EXPOSE 8080 7070 7071
CMD ["filesync-http", "serve"]
