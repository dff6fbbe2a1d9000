# Televisit's server as a container image: `docker build -t televisit .` (see the README's
# "Container image and compose file"). The web pages are built into the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p televisit-server --bin televisit

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates sqlite3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /data --create-home televisit
COPY --from=build /src/target/release/televisit /usr/local/bin/televisit
USER televisit
WORKDIR /data
VOLUME /data
EXPOSE 8080
ENV TELEVISIT_LISTEN=0.0.0.0:8080 \
    TELEVISIT_DATABASE_URL=sqlite:///data/televisit.db \
    TELEVISIT_LOG_FORMAT=json
HEALTHCHECK --interval=30s --timeout=3s CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["televisit"]
CMD ["serve"]
