//! TLS on the gRPC listeners, against the real server: checks over TLS, client certificates
//! required when a client CA is configured, plaintext refused, and a rotated certificate picked
//! up without a restart. Certificates are made per run (rcgen).
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed assumption should stop the test"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use mcp_authz::config::Config;
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{FakeIdp, TestKey, config_yaml};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const RESOURCE: &str = "https://mcp.example.com/mcp";

/// A certificate authority made for the test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and key (PEM) for `names`.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_server_cert(dir: &Path, ca: &Ca) {
    let (cert, key) = ca.leaf(&["localhost"]);
    // Key first, then the certificate: a reload must not see a mismatched pair for long.
    std::fs::write(dir.join("server.key"), key).unwrap();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
}

async fn start(dir: &Path, idp: &FakeIdp, client_ca: Option<&Ca>) -> Running {
    let mut tls = format!(
        "  tls: {{cert_file: {}, key_file: {}",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    );
    if let Some(ca) = client_ca {
        std::fs::write(dir.join("client-ca.pem"), ca.pem()).unwrap();
        tls.push_str(&format!(
            ", client_ca_file: {}",
            dir.join("client-ca.pem").display()
        ));
    }
    tls.push_str("}\n");
    let yaml = config_yaml(&idp.issuer, RESOURCE, "").replace(
        "  admin_grpc: 127.0.0.1:0\n",
        &format!("  admin_grpc: 127.0.0.1:0\n{tls}"),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    server::start(&config, None).await.unwrap()
}

/// One check over `channel`; the HTTP status of the decision (a 401: no token is sent).
async fn check(channel: Channel) -> Result<i32, tonic::Status> {
    let request = mcp_authz::grpc::check_request(mcp_authz::grpc::ClientRequest {
        method: "POST".into(),
        path: "/mcp".into(),
        host: "mcp.example.com".into(),
        bearer: None,
        headers: vec!["content-type: application/json".into()],
        body: mcp_authz::testutil::TOOLS_LIST.as_bytes().to_vec(),
    })
    .unwrap();
    let response = AuthorizationClient::new(channel)
        .check(request)
        .await?
        .into_inner();
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    Ok(match response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(0, |s| s.code),
        Some(HttpResponse::OkResponse(_)) => 200,
        _ => 0,
    })
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

#[tokio::test]
async fn checks_over_tls_with_client_certificates_and_certificate_rotation() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    write_server_cert(dir.path(), &server_ca);
    let running = start(dir.path(), &idp, Some(&client_ca)).await;
    let addr = running.grpc_addr;

    // A client with a certificate from the configured client CA gets decisions.
    let client = client_ca.leaf(&["envoy"]);
    let channel = tls_channel(addr, &server_ca, Some(client.clone()))
        .await
        .unwrap();
    assert_eq!(check(channel).await.unwrap(), 401);

    // Without a client certificate, or with one from another CA: no decision.
    let refused =
        async |identity: Option<(String, String)>| match tls_channel(addr, &server_ca, identity)
            .await
        {
            Err(_) => true,
            Ok(channel) => check(channel).await.is_err(),
        };
    assert!(refused(None).await, "no client certificate was accepted");
    let stranger = Ca::new("another CA").leaf(&["envoy"]);
    assert!(
        refused(Some(stranger)).await,
        "a foreign client certificate was accepted"
    );

    // Plaintext HTTP/2 to the TLS port: no decision.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    let plain_refused = match plain {
        Err(_) => true,
        Ok(channel) => check(channel).await.is_err(),
    };
    assert!(plain_refused, "plaintext was answered on the TLS port");

    // Rotation: a certificate from a new CA is served within a few seconds, no restart.
    let rotated_ca = Ca::new("rotated server CA");
    write_server_cert(dir.path(), &rotated_ca);
    let started = Instant::now();
    loop {
        if let Ok(channel) = tls_channel(addr, &rotated_ca, Some(client.clone())).await
            && check(channel).await.is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the old one no longer is.
    assert!(
        tls_channel(addr, &server_ca, Some(client.clone()))
            .await
            .is_err()
            || check(
                tls_channel(addr, &server_ca, Some(client.clone()))
                    .await
                    .unwrap()
            )
            .await
            .is_err()
    );
    assert!(tls_reloads(&running, "success").await >= 1.0);

    // A half-written certificate file is counted as a failed reload and changes nothing: the
    // rotated certificate keeps being served.
    std::fs::write(
        dir.path().join("server.pem"),
        "-----BEGIN CERTIFICATE-----\nMII",
    )
    .unwrap();
    let started = Instant::now();
    while tls_reloads(&running, "failure").await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the broken certificate file was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channel = tls_channel(addr, &rotated_ca, Some(client)).await.unwrap();
    assert_eq!(check(channel).await.unwrap(), 401);

    // The admin gRPC API is on TLS too.
    let admin = tls_channel(
        running.admin_grpc_addr,
        &rotated_ca,
        Some(client_ca.leaf(&["op"])),
    )
    .await
    .unwrap();
    let status = mcp_authz::admin::grpc::pb::admin_client::AdminClient::new(admin)
        .status(mcp_authz::admin::grpc::pb::StatusRequest {})
        .await;
    assert!(status.is_ok(), "{status:?}");
    running.stop().await;
}

/// `mcp_authz_tls_reloads_total{outcome}` from the plaintext admin endpoint.
async fn tls_reloads(running: &Running, outcome: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", running.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("mcp_authz_tls_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn unusable_certificate_files_stop_the_start() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    let yaml = config_yaml(&idp.issuer, RESOURCE, "").replace(
        "  admin_grpc: 127.0.0.1:0\n",
        &format!(
            "  admin_grpc: 127.0.0.1:0\n  tls: {{cert_file: {}, key_file: {}}}\n",
            dir.path().join("server.pem").display(),
            dir.path().join("server.key").display()
        ),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let Err(e) = server::start(&config, None).await else {
        panic!("started with an unusable certificate")
    };
    let e = e.to_string();
    assert!(e.contains("listen.tls") && e.contains("server.pem"), "{e}");
}
