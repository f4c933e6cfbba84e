//! The HTTP write API byte for byte (docs/INTERFACE.md): status lines, header
//! names and order, JSON bodies, over keep-alive and pipelined connections.
//!
//! The node answers the common form of a write (`PUT`/`DELETE /v1/kv/{key}`,
//! `POST /v1/log`, plain key, no query or `?ack=LEVEL`, a `Content-Length`
//! body) on a fast path that bypasses the router; every other form (a
//! percent-encoded key, a chunked body, other query strings) goes through the
//! axum router. Each case here is sent in both forms and the answers must be
//! the same bytes (but for the `date` header and the LSNs), so the fast path
//! cannot drift from the router's contract.

mod common;

use std::time::Duration;

use common::{Cluster, Opts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use walship::config::Config;

const TOKEN: &str = "http-api-test-token";

fn tweak(_i: usize, cfg: &mut Config) {
    cfg.security.token = Some(TOKEN.to_string());
    cfg.limits.max_value_bytes = 1024;
    cfg.limits.max_http_body_bytes = 4096;
}

/// One HTTP/1.1 answer as read off the socket.
#[derive(Debug)]
struct Answer {
    status_line: String,
    /// Header lines in order, `date` left out (it changes every second).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {:?}", self.status_line))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.text()))
    }
}

/// A raw keep-alive connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Conn { s, buf: Vec::new() }
    }

    async fn send(&mut self, raw: &[u8]) {
        self.s.write_all(raw).await.expect("send request");
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(30), self.s.read(&mut chunk))
            .await
            .expect("answer within 30 s")
            .expect("read answer");
        assert!(n > 0, "connection closed; read so far: {:?}", self.buf);
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn answer(&mut self) -> Answer {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            self.fill().await;
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ASCII head");
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line").to_string();
        let mut headers = Vec::new();
        let mut len = 0;
        for l in lines {
            let (n, v) = l.split_once(": ").unwrap_or_else(|| panic!("header {l:?}"));
            assert_eq!(n, n.to_ascii_lowercase(), "header names are lower case");
            if n == "content-length" {
                len = v.parse().expect("content-length");
            }
            if n != "date" {
                headers.push((n.to_string(), v.to_string()));
            }
        }
        while self.buf.len() < len {
            self.fill().await;
        }
        let body = self.buf.drain(..len).collect();
        Answer {
            status_line,
            headers,
            body,
        }
    }

    async fn exchange(&mut self, raw: &[u8]) -> Answer {
        self.send(raw).await;
        self.answer().await
    }
}

fn request(method: &str, target: &str, auth: bool, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nhost: walship\r\n");
    if auth {
        r.push_str(&format!("authorization: Bearer {TOKEN}\r\n"));
    }
    if !body.is_empty() || method != "DELETE" {
        r.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// A chunked request (always served by the router).
fn chunked(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nhost: walship\r\nauthorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r.extend_from_slice(b"\r\n0\r\n\r\n");
    r
}

/// A successful write's answer, exactly: `200`, JSON `{"lsn":"X/X","term":N}`,
/// headers content-type, walship-lsn, content-length (and date).
fn check_written(a: &Answer, what: &str) -> (u64, u64) {
    assert_eq!(a.status_line, "HTTP/1.1 200 OK", "{what}: {a:?}");
    assert_eq!(
        a.names(),
        ["content-type", "walship-lsn", "content-length"],
        "{what}: {a:?}"
    );
    assert_eq!(a.header("content-type"), Some("application/json"), "{what}");
    let applied = common::parse_lsn(a.header("walship-lsn").expect("walship-lsn"));
    let v = a.json();
    let lsn = v["lsn"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
    let term = v["term"].as_u64().unwrap_or_else(|| panic!("{what}: {v}"));
    assert_eq!(
        a.text(),
        format!("{{\"lsn\":\"{lsn}\",\"term\":{term}}}"),
        "{what}: the body is exactly the two fields"
    );
    let (hi, lo) = lsn.split_once('/').expect("X/X");
    assert!(
        !hi.is_empty() && hi.chars().chain(lo.chars()).all(|c| c.is_ascii_hexdigit()),
        "{what}: LSN {lsn} is printed as PostgreSQL does"
    );
    assert_eq!(lsn, lsn.to_ascii_uppercase(), "{what}: upper-case hex");
    let lsn = common::parse_lsn(lsn);
    assert!(lsn > 0 && term > 0, "{what}");
    let _ = applied;
    (lsn, term)
}

/// Two answers that must be the same bytes but for the date and the LSN values.
fn same_shape(a: &Answer, b: &Answer, what: &str) {
    assert_eq!(a.status_line, b.status_line, "{what}");
    assert_eq!(a.names(), b.names(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.headers.iter().zip(&b.headers) {
        if x.0 != "walship-lsn" && x.0 != "content-length" && x.0 != "location" {
            assert_eq!(x, y, "{what}");
        }
    }
}

/// Every write form on the fast path and through the router gives the same
/// answer: 200 bodies, 401, 400 (bad ack), 413 (value and body limits), 307
/// from a follower; keep-alive and pipelined requests are answered in order;
/// the writes land (read back over GET).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_answers_match_the_contract_on_both_paths() {
    let mut opts = Opts::new(3, "quorum");
    opts.tweak = Some(tweak);
    let c = Cluster::start(opts).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let leader = c.cfgs[l].http_listen.to_string();
    let mut k = Conn::open(&leader).await;

    // 200: PUT, DELETE, POST /v1/log, each fast and through the router.
    let fast = k
        .exchange(&request(
            "PUT",
            "/v1/kv/fast-1?ack=remote_flush",
            true,
            b"v1",
        ))
        .await;
    let (l1, term) = check_written(&fast, "PUT fast");
    let routed = k
        .exchange(&request(
            "PUT",
            "/v1/kv/fast%2D2?ack=remote_flush",
            true,
            b"v2",
        ))
        .await;
    let (l2, _) = check_written(&routed, "PUT routed");
    assert!(l2 > l1, "LSNs grow: {l1} then {l2}");
    same_shape(&fast, &routed, "PUT");
    let chunk = k.exchange(&chunked("PUT", "/v1/kv/fast-3", b"v3")).await;
    check_written(&chunk, "PUT chunked");
    for (a, b, what) in [
        (
            request("PUT", "/v1/kv/fast-4", true, b"v4"),
            request("PUT", "/v1/kv/fast-5?", true, b"v5"),
            "PUT without ack",
        ),
        (
            request("DELETE", "/v1/kv/fast-1", true, b""),
            request("DELETE", "/v1/kv/fast%2D4?ack=local", true, b""),
            "DELETE",
        ),
        (
            request("POST", "/v1/log?ack=remote_apply", true, b"rec-1"),
            request("POST", "/v1/log?ack=remote_apply&x=1", true, b"rec-2"),
            "POST /v1/log",
        ),
    ] {
        let x = k.exchange(&a).await;
        let (_, t) = check_written(&x, what);
        assert_eq!(t, term, "{what}");
        let y = k.exchange(&b).await;
        check_written(&y, what);
        same_shape(&x, &y, what);
    }

    // Pipelined: three requests in one segment, three answers in order.
    let mut burst = request("PUT", "/v1/kv/pipe-1", true, b"p1");
    burst.extend(request("PUT", "/v1/kv/pipe%2D2", true, b"p2"));
    burst.extend(request(
        "PUT",
        "/v1/kv/pipe-3?ack=remote_apply",
        true,
        b"p3",
    ));
    k.send(&burst).await;
    let mut last = 0;
    for i in 1..=3 {
        let (lsn, _) = check_written(&k.answer().await, &format!("pipelined {i}"));
        assert!(lsn > last, "pipelined answers come in request order");
        last = lsn;
    }

    // 401 without the token (counted and logged as a refusal), both paths.
    let refused = || {
        c.shared(l)
            .metrics
            .connections_refused_total
            .with_label_values(&["http", "unauthorized"])
            .get()
    };
    let before = refused();
    let x = k.exchange(&request("PUT", "/v1/kv/x", false, b"y")).await;
    let y = k.exchange(&request("PUT", "/v1/kv/%78", false, b"y")).await;
    let z = k.exchange(&request("DELETE", "/v1/kv/x", false, b"")).await;
    for a in [&x, &y, &z] {
        assert_eq!(a.status_line, "HTTP/1.1 401 Unauthorized");
        assert_eq!(a.names(), ["content-type", "content-length"], "{a:?}");
        assert_eq!(
            a.text(),
            r#"{"code":"unauthorized","error":"a valid token is required (Authorization: Bearer <token>)"}"#
        );
    }
    assert_eq!(x.headers, y.headers, "401 headers identical on both paths");
    assert_eq!(refused(), before + 3, "each 401 is counted");

    // 400: an unknown ack level.
    let x = k
        .exchange(&request("PUT", "/v1/kv/y?ack=bogus", true, b"y"))
        .await;
    let y = k
        .exchange(&request("PUT", "/v1/kv/%79?ack=bogus", true, b"y"))
        .await;
    assert_eq!(x.status(), 400, "{x:?}");
    assert_eq!(x.json()["code"], "bad_request");
    assert!(x.json()["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("ack: "));
    assert_eq!((&x.headers, &x.body), (&y.headers, &y.body));

    // 413: a value over limits.max_value_bytes (body under the HTTP limit),
    // and a body over limits.max_http_body_bytes.
    let big = vec![b'v'; 2000];
    let x = k.exchange(&request("PUT", "/v1/kv/big", true, &big)).await;
    let y = k
        .exchange(&request("PUT", "/v1/kv/%62ig", true, &big))
        .await;
    assert_eq!(x.status(), 413, "{x:?}");
    assert_eq!(x.json()["code"], "too_large");
    assert!(x.text().contains("limits.max_value_bytes"), "{}", x.text());
    assert_eq!((&x.headers, &x.body), (&y.headers, &y.body));
    let x = k
        .exchange(&request("POST", "/v1/log", true, &vec![b'v'; 1500]))
        .await;
    assert_eq!(x.status(), 413, "{x:?}");
    assert!(x.text().contains("limits.max_value_bytes"), "{}", x.text());
    let huge = vec![b'v'; 5000];
    let x = k
        .exchange(&request("PUT", "/v1/kv/huge", true, &huge))
        .await;
    assert_eq!(x.status(), 413, "{x:?}");
    assert!(
        x.text().contains("limits.max_http_body_bytes"),
        "{}",
        x.text()
    );

    // The writes are there: fast and routed ones alike.
    for (key, want) in [
        ("fast-1", None),
        ("fast-2", Some("v2")),
        ("fast-3", Some("v3")),
        ("fast-4", None),
        ("fast-5", Some("v5")),
        ("pipe-1", Some("p1")),
        ("pipe-2", Some("p2")),
        ("pipe-3", Some("p3")),
        ("x", None),
        ("big", None),
    ] {
        let a = k
            .exchange(&request(
                "GET",
                &format!("/v1/kv/{key}?min_lsn={last}"),
                true,
                b"",
            ))
            .await;
        assert!(a.header("walship-lsn").is_some(), "GET {key}: {a:?}");
        match want {
            Some(v) => assert_eq!((a.status(), a.text().as_str()), (200, v), "GET {key}"),
            None => assert_eq!(a.status(), 404, "GET {key}: {a:?}"),
        }
    }

    // 307 from a follower to the leader's same URL, both paths.
    let f = (l + 1) % 3;
    let mut fk = Conn::open(&c.cfgs[f].http_listen.to_string()).await;
    let x = fk
        .exchange(&request("PUT", "/v1/kv/r?ack=local", true, b"r"))
        .await;
    let y = fk
        .exchange(&request("PUT", "/v1/kv/%72?ack=local", true, b"r"))
        .await;
    let z = fk.exchange(&request("POST", "/v1/log", true, b"r")).await;
    for (a, path) in [
        (&x, "/v1/kv/r?ack=local"),
        (&y, "/v1/kv/%72?ack=local"),
        (&z, "/v1/log"),
    ] {
        assert_eq!(a.status_line, "HTTP/1.1 307 Temporary Redirect", "{a:?}");
        assert_eq!(
            a.names(),
            ["content-type", "location", "walship-lsn", "content-length"],
            "{a:?}"
        );
        assert_eq!(
            a.header("location"),
            Some(format!("http://{leader}{path}").as_str())
        );
        assert_eq!(a.json()["code"], "not_leader");
    }
    same_shape(&x, &y, "307");
    assert_eq!(x.body, y.body);
    c.shutdown().await;
}
