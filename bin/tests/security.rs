//! Security refusals with real nodes on loopback (issue 7 part 4): every
//! refusal of the binary and HTTP listeners (wrong token, wrong cluster,
//! unknown member, plain text to a TLS port, TLS client without a certificate
//! when one is required, a certificate for another member, a foreign CA,
//! admin call without token), each counted in
//! `walship_connections_refused_total{listener, reason}` and logged without the
//! token; the data directory's permissions; and the happy path: a 3-node TLS
//! cluster with client certificates replicates and fails over.
//!
//! Certificates are generated here with `rcgen` (no openssl CLI needed).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{wait_for, Cluster, Opts, WAIT};
use futures::StreamExt;
use proto::{ErrorCode, FrameCodec, Hello, Message, Peer, ProtoError};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use walship::config::Config;
use walship::tls::{ClientTls, TlsFiles};

const TOKEN: &str = "s3cret-token-of-the-cluster";

// ---------------------------------------------------------------- log capture

/// Every log line of this test binary (a global subscriber: the nodes log
/// from runtime worker threads).
fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static BUF: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Capture(buf))
            .try_init();
        buf
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

// --------------------------------------------------------------- test set-up

/// What the `tweak` of the cluster applies to every node (a fn pointer cannot
/// capture, so the tests of this file run one at a time and pass it here).
struct Setup {
    token: Option<String>,
    tls: Option<(PathBuf, bool)>,
}

fn setup_slot() -> &'static Mutex<Option<Setup>> {
    static SLOT: Mutex<Option<Setup>> = Mutex::new(None);
    &SLOT
}

/// Held for a whole test: the set-up slot is read while the cluster starts.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn tweak(_i: usize, cfg: &mut Config) {
    let slot = setup_slot().lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = slot.as_ref() else { return };
    cfg.security.token = s.token.clone();
    if let Some((dir, client_auth)) = &s.tls {
        cfg.security.tls = Some(TlsFiles {
            cert_file: dir.join(format!("{}.pem", cfg.node_id)),
            key_file: dir.join(format!("{}.key", cfg.node_id)),
            ca_file: dir.join("ca.pem"),
            client_auth: *client_auth,
        });
    }
}

async fn start(nodes: usize, setup: Setup) -> Cluster {
    *setup_slot().lock().unwrap_or_else(|e| e.into_inner()) = Some(setup);
    let mut opts = Opts::new(nodes, "quorum");
    opts.tweak = Some(tweak);
    Cluster::start(opts).await
}

fn refused(c: &Cluster, i: usize, listener: &str, reason: &str) -> u64 {
    c.shared(i)
        .metrics
        .connections_refused_total
        .with_label_values(&[listener, reason])
        .get()
}

async fn wait_refused(c: &Cluster, i: usize, listener: &str, reason: &str, n: u64) {
    wait_for(
        &format!("{n} refusal(s) {listener}/{reason} counted"),
        WAIT,
        || refused(c, i, listener, reason) >= n,
    )
    .await;
}

/// A raw binary-protocol handshake over plain TCP.
async fn raw_hello(
    addr: SocketAddr,
    cluster: &str,
    peer: Peer,
    token: &str,
) -> Result<(), ProtoError> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut framed = Framed::new(tcp, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    proto::client_handshake(
        &mut framed,
        Hello {
            version: proto::PROTOCOL_VERSION,
            cluster_id: cluster.into(),
            peer,
            token: token.into(),
        },
    )
    .await
    .map(|_| ())
}

fn refused_with(r: Result<(), ProtoError>, code: ErrorCode) {
    match r {
        Err(ProtoError::Refused { code: c, .. }) if c == code => {}
        other => panic!("expected a refusal {code:?}, got {other:?}"),
    }
}

// -------------------------------------------------------------- certificates

struct Pki {
    dir: tempfile::TempDir,
}

fn issue(dir: &Path, name: &str, sans: &[&str], ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.signed_by(&key, ca, ca_key).expect("sign");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert, key)
}

/// A CA, certificates for n1..n3 (naming the member id, localhost and
/// 127.0.0.1), one for a client, and a foreign CA's certificate claiming n1.
fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_cert, ca_key) = ca("walship test CA");
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca");
    for id in ["n1", "n2", "n3"] {
        issue(
            dir.path(),
            id,
            &[id, "localhost", "127.0.0.1"],
            &ca_cert,
            &ca_key,
        );
    }
    issue(dir.path(), "client", &["client"], &ca_cert, &ca_key);
    let (other_ca, other_key) = ca("another CA");
    issue(
        dir.path(),
        "foreign",
        &["n1", "127.0.0.1"],
        &other_ca,
        &other_key,
    );
    Pki { dir }
}

impl Pki {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn client_tls(&self, server: &str, cert: Option<&str>) -> ClientTls {
        let (c, k);
        let pair = match cert {
            Some(name) => {
                c = self.path(&format!("{name}.pem"));
                k = self.path(&format!("{name}.key"));
                Some((c.as_path(), k.as_path()))
            }
            None => None,
        };
        ClientTls::new(&self.path("ca.pem"), server, pair).expect("client tls")
    }

    fn https(&self) -> reqwest::Client {
        let pem = std::fs::read(self.path("ca.pem")).expect("read ca");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca"))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("https client")
    }
}

/// A binary-protocol handshake over TLS as `peer`, presenting `cert`.
async fn tls_hello(addr: SocketAddr, tls: &ClientTls, peer: Peer) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let stream = tls.connect(tcp).await.map_err(|e| format!("tls: {e}"))?;
    let mut framed = Framed::new(stream, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    let r = tokio::time::timeout(
        WAIT,
        proto::client_handshake(
            &mut framed,
            Hello {
                version: proto::PROTOCOL_VERSION,
                cluster_id: "it".into(),
                peer,
                token: TOKEN.into(),
            },
        ),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?;
    r.map(|_| ()).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------- tests

/// Plain cluster with a token: wrong token, wrong cluster, unknown member on
/// the binary port, admin call without (or with a wrong) token on HTTP; each
/// counted, logged once with the peer address, and no token in any log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_counted_logged_and_never_show_the_token() {
    let _one = one_at_a_time().await;
    log_buffer();
    let c = start(
        1,
        Setup {
            token: Some(TOKEN.into()),
            tls: None,
        },
    )
    .await;
    c.wait_leader().await;
    let addr = c.cfgs[0].listen;
    let wrong = "WRONG-token-presented-by-an-intruder";

    refused_with(
        raw_hello(addr, "it", Peer::Client, wrong).await,
        ErrorCode::Unauthorized,
    );
    refused_with(
        raw_hello(addr, "it", Peer::Node("n1".into()), wrong).await,
        ErrorCode::Unauthorized,
    );
    refused_with(
        raw_hello(addr, "it", Peer::Client, "").await,
        ErrorCode::Unauthorized,
    );
    refused_with(
        raw_hello(addr, "other-cluster", Peer::Client, TOKEN).await,
        ErrorCode::WrongCluster,
    );
    // Only configured members may replicate or vote.
    refused_with(
        raw_hello(addr, "it", Peer::Node("n9".into()), TOKEN).await,
        ErrorCode::UnknownMember,
    );
    // The right token is accepted, as client and as member.
    raw_hello(addr, "it", Peer::Client, TOKEN)
        .await
        .expect("client accepted");
    let ok = walship::Client::connect(addr, "it", TOKEN)
        .await
        .expect("client");
    ok.put("k", "v", proto::AckLevel::Default)
        .await
        .expect("put with the token");

    wait_refused(&c, 0, "binary", "unauthorized", 3).await;
    wait_refused(&c, 0, "binary", "wrong_cluster", 1).await;
    wait_refused(&c, 0, "binary", "unknown_member", 1).await;

    // A member that is not configured cannot replicate: its StartReplication
    // never gets past the handshake (checked above); neither can an
    // authenticated client ask for WAL.
    {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut framed = Framed::new(tcp, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
        proto::client_handshake(
            &mut framed,
            Hello {
                version: proto::PROTOCOL_VERSION,
                cluster_id: "it".into(),
                peer: Peer::Client,
                token: TOKEN.into(),
            },
        )
        .await
        .expect("handshake");
        futures::SinkExt::send(
            &mut framed,
            Message::StartReplication {
                term_history: vec![],
                write_lsn: 0,
                flush_lsn: 0,
                apply_lsn: 0,
            },
        )
        .await
        .expect("send");
        match tokio::time::timeout(WAIT, framed.next())
            .await
            .expect("answer")
        {
            Some(Ok(Message::Error { code, .. })) => assert_eq!(code, ErrorCode::BadRequest),
            other => panic!("a client asking for WAL must be refused, got {other:?}"),
        }
    }

    // Admin calls: no token, a wrong token → 401; the right one → 200.
    let url = format!("{}/v1/admin/digest", c.url(0));
    let r = c.http.get(&url).send().await.expect("GET digest");
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .http
        .post(format!("{}/v1/admin/pause", c.url(0)))
        .bearer_auth(wrong)
        .send()
        .await
        .expect("POST pause");
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .http
        .put(format!("{}/v1/kv/x", c.url(0)))
        .body("y")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 401, "writes need the token too");
    let r = c
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET digest");
    assert_eq!(r.status().as_u16(), 200);
    wait_refused(&c, 0, "http", "unauthorized", 3).await;

    // The metric is exported.
    let (_, text) = {
        let r = c
            .http
            .get(format!("{}/metrics", c.url(0)))
            .send()
            .await
            .expect("metrics");
        (r.status(), r.text().await.expect("text"))
    };
    assert!(
        text.contains(
            r#"walship_connections_refused_total{listener="binary",reason="unauthorized"} 3"#
        ),
        "{text}"
    );

    let log = log_text();
    assert!(
        log.contains("reason=\"unauthorized\"") || log.contains("reason=unauthorized"),
        "refusal logged: {log}"
    );
    assert!(
        log.contains("(unknown_member)"),
        "unknown member logged: {log}"
    );
    assert!(log.contains("127.0.0.1:"), "peer address logged: {log}");
    // Each listener's refusal lines name the peer's address.
    for listener in ["binary", "http"] {
        let tag = format!("on the {listener} port (unauthorized)");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&tag)).collect();
        assert!(!lines.is_empty(), "no {tag} line: {log}");
        for l in lines {
            assert!(l.contains("refused 127.0.0.1:"), "no peer address: {l}");
        }
    }
    assert!(!log.contains(wrong), "a presented token was logged:\n{log}");
    assert!(!log.contains(TOKEN), "the cluster token was logged:\n{log}");
    c.shutdown().await;
}

/// A 3-node cluster with TLS on both ports and client certificates required:
/// it elects, replicates (binary client over TLS, HTTPS writes), fails over;
/// every refusal of the TLS ports is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_cluster_replicates_fails_over_and_refuses_intruders() {
    let _one = one_at_a_time().await;
    log_buffer();
    let pki = pki();
    let mut c = start(
        3,
        Setup {
            token: Some(TOKEN.into()),
            tls: Some((pki.dir.path().to_path_buf(), true)),
        },
    )
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let https = pki.https();
    let ports: Vec<u16> = c.cfgs.iter().map(|cfg| cfg.http_listen.port()).collect();
    let base = |i: usize| format!("https://127.0.0.1:{}", ports[i]);

    // Binary client over TLS with a client certificate, verified by member id.
    let client_tls = pki.client_tls(&c.ids[l], Some("client"));
    let client = walship::Client::connect_tls(c.cfgs[l].listen, "it", TOKEN, Some(&client_tls))
        .await
        .expect("TLS client");
    client
        .put("bin", "over-tls", proto::AckLevel::RemoteFlush)
        .await
        .expect("put over TLS");
    // HTTPS write with the token.
    let r = https
        .put(format!("{}/v1/kv/http", base(l)))
        .bearer_auth(TOKEN)
        .body("over-https")
        .send()
        .await
        .expect("HTTPS put");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    c.wait_converged().await;
    let f = (0..3).find(|&i| i != l).expect("a follower");
    let r = https
        .get(format!("{}/v1/kv/http", base(f)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("HTTPS get");
    assert_eq!(r.text().await.expect("body"), "over-https");
    // A write on a follower is redirected to the leader's https:// URL.
    let r = https
        .put(format!("{}/v1/kv/redir", base(f)))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .expect("put on follower");
    assert_eq!(r.status().as_u16(), 307);
    let loc = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(loc.starts_with("https://"), "{loc}");

    // The CLI over HTTPS: --ca-file; without it an https endpoint is bad usage.
    let tok = pki.path("token");
    std::fs::write(&tok, TOKEN).expect("token file");
    let cli = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(args)
            .env_remove("WALSHIP_CA_FILE")
            .env_remove("WALSHIP_TOKEN")
            .env_remove("WALSHIP_ENDPOINT")
            .output()
            .expect("run walship")
    };
    let common_args = |cmd: &[&str], ca: bool| {
        let mut a: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        a.extend(["--endpoint".into(), base(f), "--token-file".into()]);
        a.push(tok.display().to_string());
        if ca {
            a.extend(["--ca-file".into(), pki.path("ca.pem").display().to_string()]);
        }
        a
    };
    // Sent to a follower: the CLI follows the https:// redirect to the leader.
    let out = cli(common_args(&["put", "cli", "over-cli"], true));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lsn = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = cli(common_args(
        &["get", "cli", "--min-lsn", &lsn, "--wait", "20s"],
        true,
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-cli");
    let out = cli(common_args(&["get", "cli"], false));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-file"));

    // Refusals on a running TLS node.
    let t = f;
    let bin = c.cfgs[t].listen;
    // Plain text to the TLS binary port.
    assert!(raw_hello(bin, "it", Peer::Client, TOKEN).await.is_err());
    wait_refused(&c, t, "binary", "tls_handshake", 1).await;
    // Plain HTTP to the HTTPS port.
    let plain = c
        .http
        .get(format!("http://{}/health", c.cfgs[t].http_listen))
        .send()
        .await;
    assert!(plain.is_err() || !plain.expect("answer").status().is_success());
    wait_refused(&c, t, "http", "tls_handshake", 1).await;
    // TLS without a client certificate (required).
    let no_cert = pki.client_tls(&c.ids[t], None);
    assert!(tls_hello(bin, &no_cert, Peer::Client).await.is_err());
    wait_refused(&c, t, "binary", "tls_handshake", 2).await;
    // A certificate of another CA.
    let foreign = pki.client_tls(&c.ids[t], Some("foreign"));
    assert!(tls_hello(bin, &foreign, Peer::Node("n1".into()))
        .await
        .is_err());
    wait_refused(&c, t, "binary", "tls_handshake", 3).await;
    // A valid certificate of one member claiming to be another.
    let impostor_id = c.ids[(t + 1) % 3].clone();
    let own_id = c.ids[(t + 2) % 3].clone();
    let impostor = pki.client_tls(&c.ids[t], Some(&own_id));
    let e = tls_hello(bin, &impostor, Peer::Node(impostor_id.clone()))
        .await
        .expect_err("impostor accepted");
    assert!(e.contains("unauthorized"), "{e}");
    wait_refused(&c, t, "binary", "certificate_mismatch", 1).await;
    // The client certificate (no member name) cannot claim to be a member.
    let as_client = pki.client_tls(&c.ids[t], Some("client"));
    assert!(tls_hello(bin, &as_client, Peer::Node(impostor_id))
        .await
        .is_err());
    wait_refused(&c, t, "binary", "certificate_mismatch", 2).await;
    // While the member's own certificate is accepted as that member.
    let genuine = pki.client_tls(&c.ids[t], Some(&own_id));
    tls_hello(bin, &genuine, Peer::Client)
        .await
        .expect("own cert as client");
    // Admin call without token over HTTPS.
    let r = https
        .post(format!("{}/v1/admin/pause", base(t)))
        .send()
        .await
        .expect("pause");
    assert_eq!(r.status().as_u16(), 401);
    wait_refused(&c, t, "http", "unauthorized", 1).await;

    // Fail over: stop the leader, a new one is elected over TLS links and
    // every acknowledged write is there.
    c.stop_node(l).await;
    let l2 = c.wait_leader().await;
    assert_ne!(l2, l);
    let r = https
        .put(format!("{}/v1/kv/after", base(l2)))
        .bearer_auth(TOKEN)
        .body("failover")
        .send()
        .await
        .expect("HTTPS put after failover");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    c.wait_converged().await;
    for i in c.running() {
        let kv = c.shared(i).kv.read();
        assert_eq!(
            kv.get(b"bin").as_deref(),
            Some(&b"over-tls"[..]),
            "node {i}"
        );
        assert_eq!(
            kv.get(b"http").as_deref(),
            Some(&b"over-https"[..]),
            "node {i}"
        );
        assert_eq!(
            kv.get(b"after").as_deref(),
            Some(&b"failover"[..]),
            "node {i}"
        );
    }
    // The old leader comes back as a follower over TLS and catches up.
    c.start_node(l).await;
    c.wait_leader().await;
    c.wait_converged().await;

    // Rebuild over TLS: the operator asks the returned node (over HTTPS, with the
    // token) to rebuild from the leader; the checkpoint and WAL transfer runs on a
    // TLS connection with the member's client certificate, and the node ends with
    // the leader's state.
    let r = https
        .post(format!("{}/v1/admin/rebuild", base(l)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST rebuild over HTTPS");
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    wait_for(
        "the rebuild over TLS completed and the node streams",
        WAIT,
        || {
            let s = c.shared(l);
            s.rebuild.progress().completed >= 1
                && !s.rebuild.is_active()
                && s.follower.lock().connected
        },
    )
    .await;
    let l3 = c.wait_leader().await;
    let r = https
        .put(format!("{}/v1/kv/rebuilt", base(l3)))
        .bearer_auth(TOKEN)
        .body("yes")
        .send()
        .await
        .expect("HTTPS put after the rebuild");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let (_, digest) = c.wait_converged().await;
    assert_eq!(
        c.shared(l).kv.read().digest(),
        digest,
        "rebuilt node's state"
    );
    assert_eq!(
        c.shared(l).kv.read().get(b"bin").as_deref(),
        Some(&b"over-tls"[..]),
        "rebuilt node holds the first write"
    );
    let log = log_text();
    assert!(!log.contains(TOKEN), "the token was logged:\n{log}");
    c.shutdown().await;
}

/// A node refuses to start on a data directory other users may access (as
/// PostgreSQL does) and creates a missing one 0700.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let fresh = tmp.path().join("a/b/data");
    walship::node::start::prepare_data_dir(&fresh).expect("create");
    let mode = std::fs::metadata(&fresh)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "created {mode:o}");
    // Again on the existing, private directory: fine.
    walship::node::start::prepare_data_dir(&fresh).expect("existing 0700");

    let open = tmp.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let e = walship::node::start::prepare_data_dir(&open).expect_err("0755 accepted");
    let text = e.to_string();
    assert!(
        text.contains("0755") && text.contains("chmod 700"),
        "{text}"
    );
    // Left as it was: walship does not change a directory it did not create.
    let mode = std::fs::metadata(&open).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    walship::node::start::prepare_data_dir(&open).expect("0700 accepted");
}
