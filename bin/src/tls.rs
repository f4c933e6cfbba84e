//! TLS (rustls, ring provider) for both listeners and every outgoing link.
//!
//! With `security.tls_cert_file` and `security.tls_key_file` set, a node
//! speaks TLS only: on its binary port, on its HTTP port, and on every link it
//! opens to another member (replication, votes, rebuilds, admin calls). The
//! other members' server certificates are verified against
//! `security.tls_ca_file` for the **member id** as a DNS name: each node's
//! certificate must carry `DNS:<node_id>` among its subject alternative names
//! (plus the host names or IPs clients use to reach it). With
//! `tls_client_auth = "require"`, every connection to the binary port must
//! present a client certificate signed by that CA, and a connection that
//! claims to be member `X` in its handshake must present a certificate naming
//! `X` (the node presents its own certificate as client certificate on its
//! outgoing links). The HTTP port never asks for a client certificate
//! (operators, scripts and load balancers authenticate with the token).
//!
//! [`Stream`] is what the listeners and links carry: plain TCP or TLS over TCP.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS setup error (a file that cannot be read or parsed, a bad key).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key} = {path:?}: {reason}")]
    File {
        /// The config key (`security.tls_cert_file`, ...).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the material (key not matching the certificate, ...).
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// A connection on a listener or link: plain TCP or TLS over TCP.
pub enum Stream {
    /// Plain TCP (no TLS configured).
    Plain(TcpStream),
    /// TLS (either side).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The end-entity certificate the peer presented (TLS server side with
    /// client authentication; `None` otherwise).
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned()),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The ring provider (no aws-lc, so builds need no cmake/NASM). rustls
/// 0.23.48 marks it deprecated because ring has no post-quantum key exchange;
/// the classical suites it offers are the ones walship wants.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// Read every certificate of a PEM file (at least one).
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            "no certificate found (PEM \"CERTIFICATE\")".into(),
        ));
    }
    Ok(certs)
}

/// Read the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key,
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// A CA file as a root store.
pub fn load_roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(key, path)? {
        roots.add(c).map_err(|e| TlsError::File {
            key,
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Whether `cert` names `id` among its subject alternative names (as a DNS
/// name). Only the name is checked; the chain was verified by the handshake.
pub fn cert_names(cert: &CertificateDer<'_>, id: &str) -> bool {
    let Ok(name) = ServerName::try_from(id.to_string()) else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The TLS side of a node: acceptors for both listeners and the connector for
/// its links to other members.
pub struct NodeTls {
    binary: tokio_rustls::TlsAcceptor,
    http: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    /// `tls_client_auth = "require"`.
    pub client_auth: bool,
    /// The CA file (outgoing HTTP calls to other members use it).
    ca_pem: Vec<u8>,
}

/// The TLS file settings of `[security]` (paths already resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_cert_file`: this node's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// `tls_key_file`: its private key (PEM).
    pub key_file: PathBuf,
    /// `tls_ca_file`: the CA that signs every member's certificate.
    pub ca_file: PathBuf,
    /// `tls_client_auth = "require"`.
    pub client_auth: bool,
}

impl NodeTls {
    /// Build the node's TLS setup; `node_id` must be named by its own
    /// certificate (the other members verify it by that name).
    pub fn new(files: &TlsFiles, node_id: &str) -> Result<NodeTls, TlsError> {
        let certs = load_certs("security.tls_cert_file", &files.cert_file)?;
        let key = load_key("security.tls_key_file", &files.key_file)?;
        let roots = Arc::new(load_roots("security.tls_ca_file", &files.ca_file)?);
        if !cert_names(&certs[0], node_id) {
            return Err(TlsError::File {
                key: "security.tls_cert_file",
                path: files.cert_file.clone(),
                reason: format!(
                    "the certificate does not name this node's id {node_id:?} as a DNS subject \
                     alternative name; the other members verify it by that name"
                ),
            });
        }
        let ca_pem = std::fs::read(&files.ca_file).map_err(|e| TlsError::File {
            key: "security.tls_ca_file",
            path: files.ca_file.clone(),
            reason: format!("cannot read: {e}"),
        })?;

        let server = |client_auth: bool, alpn: Vec<Vec<u8>>| -> Result<ServerConfig, TlsError> {
            let b = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(rustls_err)?;
            let b = if client_auth {
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.clone(),
                    provider(),
                )
                .build()
                .map_err(rustls_err)?;
                b.with_client_cert_verifier(v)
            } else {
                b.with_no_client_auth()
            };
            let mut c = b
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(rustls_err)?;
            c.alpn_protocols = alpn;
            Ok(c)
        };
        let binary = server(files.client_auth, Vec::new())?;
        let http = server(false, vec![b"http/1.1".to_vec()])?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(rustls_err)?;
        Ok(NodeTls {
            binary: tokio_rustls::TlsAcceptor::from(Arc::new(binary)),
            http: tokio_rustls::TlsAcceptor::from(Arc::new(http)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            client_auth: files.client_auth,
            ca_pem,
        })
    }

    /// TLS handshake on an accepted binary-port connection.
    pub async fn accept_binary(&self, tcp: TcpStream) -> io::Result<Stream> {
        let s = self.binary.accept(tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s))))
    }

    /// TLS handshake on an accepted HTTP-port connection.
    pub async fn accept_http(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.http.accept(tcp).await
    }

    /// TLS handshake towards member `member_id` (its certificate must name it).
    pub async fn connect_member(&self, tcp: TcpStream, member_id: &str) -> io::Result<Stream> {
        let name = ServerName::try_from(member_id.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("member id {member_id:?} is not usable as a TLS name: {e}"),
            )
        })?;
        let s = self.connector.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))))
    }

    /// An HTTP client for calls to member `member_id` at `addr`: it trusts the
    /// cluster CA and resolves `member_id` to `addr`, so that a URL
    /// `https://<member_id>:<port>/...` verifies the member's certificate for
    /// its id.
    pub fn http_client(
        &self,
        timeout: Duration,
        member_id: &str,
        addr: SocketAddr,
    ) -> Result<reqwest::Client, String> {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).map_err(|e| e.to_string())?;
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve(member_id, addr)
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// An accepted HTTP connection: as is without TLS, else after the TLS
/// handshake (bounded by `limits.handshake_timeout`); `None` when that failed
/// (counted and logged as a refusal).
pub async fn accept_http(
    shared: &crate::node::Shared,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<Stream> {
    let Some(tls) = &shared.tls else {
        return Some(Stream::Plain(tcp));
    };
    let limit = shared.cfg.limits.handshake_timeout;
    let (reason, detail) = match tokio::time::timeout(limit, tls.accept_http(tcp)).await {
        Ok(Ok(s)) => return Some(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s)))),
        Ok(Err(e)) => (
            "tls_handshake",
            format!("TLS handshake failed (plain HTTP to the HTTPS port?): {e}"),
        ),
        Err(_) => (
            "handshake_timeout",
            format!("no TLS handshake within {limit:?} (limits.handshake_timeout)"),
        ),
    };
    crate::refusal::record(
        shared,
        crate::refusal::Listener::Http,
        reason,
        Some(peer),
        &detail,
    );
    None
}

/// Open a link from this node to a member's binary port: TCP, then TLS when
/// `tls` is set. Errors are operator-readable.
pub async fn connect_member(
    tls: Option<&NodeTls>,
    addr: SocketAddr,
    member_id: &str,
    timeout: Duration,
) -> Result<Stream, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(t) => t
                .connect_member(tcp, member_id)
                .await
                .map_err(|e| format!("TLS handshake with member {member_id} failed: {e}")),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("connect timed out after {timeout:?}"))?
}

/// The receiver's way to its leader: [`connect_member`] (2 s timeout).
pub struct MemberConnector {
    /// The node's TLS (None: plain TCP).
    pub tls: Option<Arc<NodeTls>>,
}

impl receiver::stream::Connector for MemberConnector {
    fn connect<'a>(
        &'a self,
        addr: SocketAddr,
        leader_id: &'a str,
    ) -> receiver::stream::ConnectFuture<'a> {
        Box::pin(async move {
            let s = connect_member(self.tls.as_deref(), addr, leader_id, Duration::from_secs(2))
                .await?;
            Ok(Box::new(s) as receiver::stream::BoxedIo)
        })
    }
}

/// TLS settings of a client of the binary protocol ([`crate::Client`]).
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl ClientTls {
    /// Trust `ca_file`; verify the server's certificate for `server_name` (a DNS
    /// name or an IP address); present `client_cert` (certificate and key PEM
    /// files) when the node requires client certificates.
    pub fn new(
        ca_file: &Path,
        server_name: &str,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<ClientTls, TlsError> {
        let roots = load_roots("ca_file", ca_file)?;
        let b = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?
            .with_root_certificates(roots);
        let config = match client_cert {
            None => b.with_no_client_auth(),
            Some((cert, key)) => b
                .with_client_auth_cert(load_certs("cert_file", cert)?, load_key("key_file", key)?)
                .map_err(rustls_err)?,
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Rustls(format!("server name {server_name:?}: {e}")))?;
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The same settings verifying another server name (following a leader hint).
    pub fn with_server_name(&self, server_name: &str) -> Result<ClientTls, TlsError> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Rustls(format!("server name {server_name:?}: {e}")))?;
        Ok(ClientTls {
            connector: self.connector.clone(),
            server_name,
        })
    }

    /// TLS handshake over `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<Stream> {
        let s = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (p.self_signed(&key).unwrap(), key)
    }

    fn write_node(dir: &Path, name: &str, sans: &[&str]) -> TlsFiles {
        let (ca, ca_key) = ca();
        let key = rcgen::KeyPair::generate().unwrap();
        let p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        TlsFiles {
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}.key")),
            ca_file: dir.join("ca.pem"),
            client_auth: true,
        }
    }

    #[test]
    fn a_node_certificate_must_name_the_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_node(dir.path(), "n1", &["n1", "127.0.0.1"]);
        NodeTls::new(&files, "n1").unwrap();
        let e = NodeTls::new(&files, "n2").err().unwrap().to_string();
        assert!(
            e.contains("security.tls_cert_file") && e.contains("\"n2\""),
            "{e}"
        );
        let certs = load_certs("k", &files.cert_file).unwrap();
        assert!(cert_names(&certs[0], "n1"));
        assert!(!cert_names(&certs[0], "n2"));
        assert!(!cert_names(&certs[0], "not a name"));
    }

    #[test]
    fn bad_files_are_named_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = write_node(dir.path(), "n1", &["n1"]);
        std::fs::write(dir.path().join("junk"), "not pem").unwrap();
        files.ca_file = dir.path().join("junk");
        let e = NodeTls::new(&files, "n1").err().unwrap().to_string();
        assert!(e.contains("security.tls_ca_file"), "{e}");
        files.ca_file = dir.path().join("ca.pem");
        files.key_file = dir.path().join("junk");
        let e = NodeTls::new(&files, "n1").err().unwrap().to_string();
        assert!(e.contains("security.tls_key_file"), "{e}");
    }
}
