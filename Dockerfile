# syntax=docker/dockerfile:1
# Multi-stage build: compile the daemons and the client with the MariaDB
# client library, ship them on a slim runtime as a non-root user.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-libmysqlclient-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && find target/release -maxdepth 1 -type f -perm -u+x -name 'filesync*' -exec cp {} /out/ \;

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
