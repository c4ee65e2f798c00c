//! TLS for the gRPC listeners (rustls): the server certificate, optional client-certificate
//! verification (mutual TLS), and a snapshot of both that is rebuilt when the files change, so a
//! rotated certificate (cert-manager, a Kubernetes Secret) takes effect without a restart.
//!
//! Handshakes run in their own tasks, so a slow or silent client cannot hold up the accept loop,
//! and each is bounded in time. A reload that fails (a half-written file, a key that does not
//! match) keeps the last good configuration and says why in the log.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsConfig;
use crate::metrics::Metrics;

/// How often the certificate files are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// A handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("`{}` holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("`{}` holds no usable PEM private key", path.display())]
    NoKey { path: PathBuf },
    #[error("client CA `{}`: {message}", path.display())]
    ClientCa { path: PathBuf, message: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The listeners' TLS configuration, rebuilt when its files change.
pub struct Reloading {
    files: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// SHA-256 over the files' contents when `current` was built.
    digest: ArcSwap<[u8; 32]>,
}

// === impl Reloading ===

impl Reloading {
    /// Builds the configuration once; an error here stops the service from starting.
    pub fn new(files: TlsConfig) -> Result<Arc<Self>, TlsError> {
        let (config, digest) = build(&files)?;
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::from(config),
            digest: ArcSwap::from_pointee(digest),
        }))
    }

    /// Checks the files every couple of seconds until shutdown; a changed set that builds
    /// replaces the current one for new connections.
    pub async fn run_reloader(
        self: Arc<Self>,
        metrics: Metrics,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let Ok(digest) = digest_of(&self.files) else {
                continue;
            };
            if digest == **self.digest.load() {
                continue;
            }
            match build(&self.files) {
                Ok((config, digest)) => {
                    self.current.store(config);
                    self.digest.store(Arc::new(digest));
                    metrics.tls_reload("success");
                    tracing::info!("TLS certificate files changed: reloaded");
                }
                Err(e) => {
                    // Remember the bad contents so the same error is not logged every tick.
                    self.digest.store(Arc::new(digest));
                    metrics.tls_reload("failure");
                    tracing::warn!(error = %e, "TLS certificate files changed but cannot be used; keeping the previous ones");
                }
            }
        }
    }

    /// Accepts TCP connections on `listener` and hands out those that complete a TLS
    /// handshake, until shutdown (the listener is closed then).
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                // Checks are small request/response pairs: Nagle only adds latency.
                let _ = stream.set_nodelay(true);
                let acceptor = TlsAcceptor::from(self.current.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn digest_of(files: &TlsConfig) -> Result<[u8; 32], TlsError> {
    let mut h = Sha256::new();
    for path in [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        h.update(read(path)?);
        h.update([0]);
    }
    Ok(h.finalize().into())
}

/// The rustls configuration for `files`: HTTP/2 only (gRPC), the process's aws-lc-rs provider,
/// TLS 1.2 and 1.3.
fn build(files: &TlsConfig) -> Result<(Arc<ServerConfig>, [u8; 32]), TlsError> {
    let digest = digest_of(files)?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.cert_file)?)
            .filter_map(Result::ok)
            .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert_file.clone(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read(&files.key_file)?).map_err(|_| TlsError::NoKey {
            path: files.key_file.clone(),
        })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |message: String| TlsError::ClientCa {
                path: path.clone(),
                message,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(path)?) {
                let cert = cert.map_err(|e| ca_error(e.to_string()))?;
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_error("holds no PEM certificate".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), digest))
}
