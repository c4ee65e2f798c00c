# mcp-authz container image: built with the Rust toolchain, run from a distroless base as the
# unprivileged `nonroot` user (uid 65532), with the shipped policies as a default.
#   docker build -t mcp-authz .
#   docker run -p 9191:9191 -p 9090:9090 -v $PWD/config.yaml:/etc/mcp-authz/config/config.yaml mcp-authz
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/mcp-authz

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mcp-authz /usr/local/bin/mcp-authz
COPY --from=build /src/policies /etc/mcp-authz/policies
USER nonroot:nonroot
EXPOSE 9191 9090
ENTRYPOINT ["/usr/local/bin/mcp-authz"]
CMD ["serve", "--config", "/etc/mcp-authz/config/config.yaml", "--log-format", "json"]
