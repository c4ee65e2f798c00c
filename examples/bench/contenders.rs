//! The contenders: how each one's process set is started (fresh for every round), what load
//! target it offers, and the decisions checked before it is measured: a request without a
//! token must be denied (where there is authorization at all), another tenant's token too, and
//! the measured requests must be allowed.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use hyper::header::HeaderValue;
use mcp_authz::testutil::{config_yaml, config_yaml_with_policies, free_port};

use crate::load::Target;
use crate::procs::{Pinning, Proc};
use crate::tokens::{Material, RESOURCE};
use crate::upstream;

mod verify;

pub use verify::verify;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Baseline,
    Repeated,
    Mix,
    Rs256,
    Es256,
    Envoy,
    EnvoyJwt,
    EnvoyMcp,
    EnvoyMcpAuthz,
    /// The same stack, sending `tools/list`: the list filter (ext_proc) on every response.
    EnvoyMcpAuthzList,
}

impl Kind {
    /// Run order within a round: each group's rate reference first (mcp-authz with a repeated
    /// token for direct gRPC, Envoy without authorization behind Envoy), so the half rate of
    /// the others comes from the same round.
    pub const ALL: [Kind; 10] = [
        Kind::Repeated,
        Kind::Baseline,
        Kind::Mix,
        Kind::Rs256,
        Kind::Es256,
        Kind::Envoy,
        Kind::EnvoyJwt,
        Kind::EnvoyMcp,
        Kind::EnvoyMcpAuthz,
        Kind::EnvoyMcpAuthzList,
    ];

    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Repeated => "repeated",
            Kind::Mix => "mix",
            Kind::Rs256 => "rs256",
            Kind::Es256 => "es256",
            Kind::Envoy => "envoy",
            Kind::EnvoyJwt => "envoy-jwt",
            Kind::EnvoyMcp => "envoy-mcp",
            Kind::EnvoyMcpAuthz => "envoy-mcp-authz",
            Kind::EnvoyMcpAuthzList => "envoy-mcp-authz-list",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline (always-allow gRPC server)",
            Kind::Repeated => "mcp-authz, repeated token",
            Kind::Mix => "mcp-authz, realistic mix",
            Kind::Rs256 => "mcp-authz, distinct RS256",
            Kind::Es256 => "mcp-authz, distinct ES256",
            Kind::Envoy => "Envoy, no authorization",
            Kind::EnvoyJwt => "Envoy + jwt_authn + rbac",
            Kind::EnvoyMcp => "Envoy + jwt_authn + MCP filter + rbac",
            Kind::EnvoyMcpAuthz => "Envoy + ext_authz mcp-authz",
            Kind::EnvoyMcpAuthzList => "Envoy + mcp-authz, tools/list filtered (ext_proc)",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn is_envoy(self) -> bool {
        matches!(
            self,
            Kind::Envoy
                | Kind::EnvoyJwt
                | Kind::EnvoyMcp
                | Kind::EnvoyMcpAuthz
                | Kind::EnvoyMcpAuthzList
        )
    }

    /// The contender ratios are taken against: the always-allow server for direct gRPC,
    /// Envoy without authorization for the Envoy contenders (HTTP/1.1 through a proxy
    /// saturates far below direct gRPC, so half the gRPC baseline would overload them all).
    pub fn reference(self) -> Kind {
        if self.is_envoy() {
            Kind::Envoy
        } else {
            Kind::Baseline
        }
    }

    /// The contender whose saturation sets the half rate of the group: mcp-authz's own with a
    /// repeated token for direct gRPC (the always-allow baseline runs at that rate too, for
    /// comparison), Envoy without authorization behind Envoy.
    pub fn rate_reference(self) -> Kind {
        if self.is_envoy() {
            Kind::Envoy
        } else {
            Kind::Repeated
        }
    }

    /// Whether the contender also runs at the fixed rate (`--fixed-rate`, 1,000 checks/s):
    /// the direct gRPC contenders the latency target compares.
    pub fn runs_fixed_rate(self) -> bool {
        matches!(self, Kind::Baseline | Kind::Repeated | Kind::Mix)
    }

    /// Whether the contender authorizes (so a missing token must be denied).
    pub fn authorizes(self) -> bool {
        !matches!(self, Kind::Baseline | Kind::Envoy)
    }

    /// Whether it reads the MCP body (so it must deny a tool or an argument the token does not
    /// allow); plain jwt_authn + rbac cannot tell one tool from another.
    pub fn reads_body(self) -> bool {
        self.authorizes() && self != Kind::EnvoyJwt
    }
}

/// What every round's contenders share.
pub struct Env {
    pub mcp_authz: PathBuf,
    pub allow_server: PathBuf,
    pub envoy: PathBuf,
    /// This binary, started again with `--upstream` as the MCP server behind Envoy.
    pub bench_exe: PathBuf,
    pub pin: Pinning,
    /// Configs and logs of this run.
    pub dir: PathBuf,
    pub issuer: String,
    pub material: Material,
    /// The `cache: {tokens: N}` key, when the mcp-authz binary knows it.
    pub cache_tokens: Option<usize>,
    pub grpc_connections: usize,
    /// The realistic mix, when `mix` runs.
    pub mix: Option<crate::mix::Mix>,
}

/// A started contender.
pub struct Started {
    pub procs: Vec<Proc>,
    pub target: Target,
    /// The mix's first pass, sent (and measured) before `target`'s steady state.
    pub cold: Option<Target>,
    /// Processes reported on, by role (CPU per check, peak RSS).
    pub watched: Vec<(&'static str, u32)>,
    /// mcp-authz's RSS after startup and readiness, before any load.
    pub idle_rss_kib: Vec<(&'static str, u64)>,
}

impl Started {
    /// Fails when a process died (under load, a crash is worth more than any figure).
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }

    pub async fn stop(self) {
        for p in self.procs {
            p.stop().await;
        }
    }
}

/// Starts `kind`'s processes; `seq` keeps file names apart.
pub async fn start(kind: Kind, env: &Env, seq: usize) -> Result<Started, String> {
    let mut procs = Vec::new();
    let mut idle = Vec::new();
    let mut cold = None;
    let authorization = HeaderValue::from_str(&format!("Bearer {}", env.material.token))
        .map_err(|e| e.to_string())?;
    let target = match kind {
        Kind::Baseline => {
            let mut p = Proc::spawn(
                "allow_server",
                &env.allow_server,
                &["--listen", "127.0.0.1:0"],
                &[],
                &env.pin,
                env.dir.join(format!("{seq}-allow_server.log")),
            )?;
            let addr = p.read_addr().await?;
            procs.push(p);
            grpc_target(env, addr, env.material.repeated.clone())
        }
        Kind::Mix => {
            let mix = env.mix.as_ref().ok_or("the mix was not built")?;
            let yaml = |ports: [u16; 3]| {
                mcp_authz_config(&env.issuer, ports, env.cache_tokens, Some(&mix.policies))
            };
            let custom = CustomConfig {
                yaml: &yaml,
                envs: &[],
            };
            let (p, addr) = start_mcp_authz(env, seq, Some(custom)).await?;
            idle.push(("mcp-authz", crate::procs::vm_kib(p.pid, "VmRSS")?));
            procs.push(p);
            cold = Some(Target::Grpc {
                addr,
                connections: env.grpc_connections,
                requests: mix.cold.clone(),
                expect: Some(mix.cold_expect.clone()),
                cursor: None,
            });
            Target::Grpc {
                addr,
                connections: env.grpc_connections,
                requests: mix.requests.clone(),
                expect: Some(mix.expect.clone()),
                cursor: Some(Default::default()),
            }
        }
        Kind::Repeated | Kind::Rs256 | Kind::Es256 => {
            let (p, addr) = start_mcp_authz(env, seq, None).await?;
            idle.push(("mcp-authz", crate::procs::vm_kib(p.pid, "VmRSS")?));
            procs.push(p);
            let pool = match kind {
                Kind::Rs256 => env.material.rs256_pool.clone(),
                Kind::Es256 => env.material.es256_pool.clone(),
                _ => env.material.repeated.clone(),
            };
            grpc_target(env, addr, pool)
        }
        Kind::Envoy
        | Kind::EnvoyJwt
        | Kind::EnvoyMcp
        | Kind::EnvoyMcpAuthz
        | Kind::EnvoyMcpAuthzList => {
            let mut up = Proc::spawn(
                "upstream",
                &env.bench_exe,
                &["--upstream", "--listen", "127.0.0.1:0"],
                &[],
                &env.pin,
                env.dir.join(format!("{seq}-upstream.log")),
            )?;
            let upstream_port = up.read_addr().await?.port();
            procs.push(up);
            let listen = free_port();
            let admin = free_port();
            let config = match kind {
                Kind::Envoy => fill(
                    include_str!("envoy/noauth.yaml"),
                    listen,
                    upstream_port,
                    admin,
                ),
                Kind::EnvoyJwt => fill(
                    include_str!("envoy/jwt_authn.yaml"),
                    listen,
                    upstream_port,
                    admin,
                )
                .replace("@ISSUER@", &env.issuer)
                .replace("@AUDIENCE@", RESOURCE)
                .replace("@JWKS@", &env.material.jwks()),
                Kind::EnvoyMcp => fill(
                    include_str!("envoy/jwt_mcp.yaml"),
                    listen,
                    upstream_port,
                    admin,
                )
                .replace("@ISSUER@", &env.issuer)
                .replace("@AUDIENCE@", RESOURCE)
                .replace("@JWKS@", &env.material.jwks()),
                _ => {
                    let (p, addr) = start_mcp_authz(env, seq, None).await?;
                    idle.push(("mcp-authz", crate::procs::vm_kib(p.pid, "VmRSS")?));
                    procs.push(p);
                    shipped_envoy(listen, addr.port(), upstream_port, admin)?
                }
            };
            const PLACEHOLDERS: [&str; 6] = [
                "@LISTEN_PORT@",
                "@UPSTREAM_PORT@",
                "@ADMIN_PORT@",
                "@ISSUER@",
                "@AUDIENCE@",
                "@JWKS@",
            ];
            if PLACEHOLDERS.iter().any(|p| config.contains(p)) {
                return Err("an Envoy template placeholder was left unfilled".into());
            }
            let path = env.dir.join(format!("{seq}-envoy.yaml"));
            std::fs::write(&path, config).map_err(|e| e.to_string())?;
            let mut envoy = Proc::spawn(
                "envoy",
                &env.envoy,
                &[
                    "-c",
                    &path.to_string_lossy(),
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warn",
                ],
                &[],
                &env.pin,
                env.dir.join(format!("{seq}-envoy.log")),
            )?;
            envoy
                .wait_http_ok(&format!("http://127.0.0.1:{admin}/ready"))
                .await?;
            // Envoy first: the reports list its CPU before mcp-authz's.
            procs.insert(0, envoy);
            Target::Http {
                addr: SocketAddr::from(([127, 0, 0, 1], listen)),
                authorization: Some(authorization),
                body: if kind == Kind::EnvoyMcpAuthzList {
                    crate::tokens::LIST
                } else {
                    crate::tokens::CALL
                },
            }
        }
    };
    let watched = procs.iter().map(|p| (p.role, p.pid)).collect();
    Ok(Started {
        procs,
        target,
        cold,
        watched,
        idle_rss_kib: idle,
    })
}

fn grpc_target(env: &Env, addr: SocketAddr, requests: std::sync::Arc<Vec<Bytes>>) -> Target {
    Target::Grpc {
        addr,
        connections: env.grpc_connections,
        requests,
        expect: None,
        cursor: None,
    }
}

fn fill(template: &str, listen: u16, upstream: u16, admin: u16) -> String {
    template
        .replace("@LISTEN_PORT@", &listen.to_string())
        .replace("@UPSTREAM_PORT@", &upstream.to_string())
        .replace("@ADMIN_PORT@", &admin.to_string())
}

/// The shipped deploy/envoy/envoy.yaml with its ports rewritten (shared with tests/envoy.rs).
fn shipped_envoy(listen: u16, authz: u16, upstream: u16, admin: u16) -> Result<String, String> {
    mcp_authz::testutil::shipped_envoy_config(listen, authz, upstream, admin)
}

/// The mcp-authz configuration of the benchmark: the fake IdP, server `demo` (tenant
/// `acme`), the shipped policies (or `policies`), the verified-token cache when the binary has
/// one, and `testutil::TEST_OVERLOAD` (a queue wait of 10 s, so no check is shed under load).
pub fn mcp_authz_config(
    issuer: &str,
    ports: [u16; 3],
    cache: Option<usize>,
    policies: Option<&std::path::Path>,
) -> String {
    let [grpc, admin, admin_grpc] = ports;
    let base = match policies {
        Some(dir) => config_yaml_with_policies(issuer, RESOURCE, "", dir),
        None => config_yaml(issuer, RESOURCE, ""),
    };
    let mut yaml = base
        .lines()
        .map(|line| match line.trim() {
            "grpc: 127.0.0.1:0" => format!("  grpc: 127.0.0.1:{grpc}\n"),
            "admin: 127.0.0.1:0" => format!("  admin: 127.0.0.1:{admin}\n"),
            "admin_grpc: 127.0.0.1:0" => format!("  admin_grpc: 127.0.0.1:{admin_grpc}\n"),
            _ => format!("{line}\n"),
        })
        .collect::<String>();
    if let Some(n) = cache {
        yaml.push_str(&format!("cache: {{tokens: {n}}}\n"));
    }
    yaml
}

/// A configuration other than the standard one (the memory phase's HS256 issuer).
pub struct CustomConfig<'a> {
    /// Makes the YAML for the (grpc, admin, admin_grpc) ports chosen here.
    pub yaml: &'a dyn Fn([u16; 3]) -> String,
    /// Environment of the process (where the HMAC secret comes from).
    pub envs: &'a [(&'a str, &'a str)],
}

/// Starts `mcp-authz serve` and waits for `/readyz` (keys loaded).
pub async fn start_mcp_authz(
    env: &Env,
    seq: usize,
    custom: Option<CustomConfig<'_>>,
) -> Result<(Proc, SocketAddr), String> {
    let standard = |ports: [u16; 3]| mcp_authz_config(&env.issuer, ports, env.cache_tokens, None);
    let (yaml, envs): (&dyn Fn([u16; 3]) -> String, _) = match &custom {
        Some(c) => (c.yaml, c.envs),
        None => (&standard, &[][..]),
    };
    let launched = launch_mcp_authz(
        &env.mcp_authz,
        &env.pin,
        &env.dir.join(format!("{seq}-mcp-authz")),
        yaml,
        envs,
    )
    .await?;
    Ok((launched.proc, launched.grpc))
}

/// A started `mcp-authz serve`.
pub struct Launched {
    pub proc: Proc,
    pub grpc: SocketAddr,
    /// The admin HTTP port (`/metrics`, `/readyz`).
    pub admin: u16,
}

/// Writes `<stem>.yaml` from `yaml` (given the grpc, admin and admin_grpc ports chosen here),
/// starts `program serve` with its log in `<stem>.log`, and waits for `/readyz`.
pub async fn launch_mcp_authz(
    program: &std::path::Path,
    pin: &Pinning,
    stem: &std::path::Path,
    yaml: &dyn Fn([u16; 3]) -> String,
    envs: &[(&str, &str)],
) -> Result<Launched, String> {
    let ports = [free_port(), free_port(), free_port()];
    let path = stem.with_extension("yaml");
    std::fs::write(&path, yaml(ports)).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let mut p = Proc::spawn(
        "mcp-authz",
        program,
        &["serve", "--config", &path.to_string_lossy()],
        envs,
        pin,
        stem.with_extension("log"),
    )?;
    p.wait_http_ok(&format!("http://127.0.0.1:{}/readyz", ports[1]))
        .await?;
    Ok(Launched {
        proc: p,
        grpc: SocketAddr::from(([127, 0, 0, 1], ports[0])),
        admin: ports[1],
    })
}

/// A one-line upstream sanity note for the report.
pub fn upstream_note() -> String {
    format!(
        "an upstream HTTP/1.1 server answering 200 `{}`",
        upstream::RESULT
    )
}
