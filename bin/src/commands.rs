//! Client subcommands of the CLI, over the HTTP API. Each returns the process
//! exit status: 0 success, 1 the operation failed (stderr says why), 2 bad usage.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::cli::ClientOpts;

/// Exit status of a failed operation.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of bad usage or bad config.
pub const EXIT_USAGE: i32 = 2;

/// An HTTP client bound to an endpoint and token.
pub struct Http {
    client: reqwest::Client,
    /// Base URL, without a trailing slash.
    pub base: String,
    token: Option<String>,
}

impl Http {
    /// Build from the CLI options (`--endpoint`, `--token-file`, `WALSHIP_TOKEN`).
    pub fn new(opts: &ClientOpts) -> Result<Http, String> {
        let token = match &opts.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("--token-file {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("WALSHIP_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let base = opts.endpoint.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(format!(
                "--endpoint {base:?}: expected a URL like http://127.0.0.1:7480"
            ));
        }
        // Redirects are followed by `send` (reqwest's own policy drops the
        // Authorization header on a redirect to another port: a write sent to
        // a follower came back 401 from the leader).
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60));
        match &opts.ca_file {
            Some(p) => {
                let pem =
                    std::fs::read(p).map_err(|e| format!("--ca-file {}: {e}", p.display()))?;
                let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    format!("--ca-file {}: not a PEM certificate: {e}", p.display())
                })?;
                builder = builder
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(ca);
            }
            None if base.starts_with("https://") => {
                return Err(format!(
                    "--endpoint {base:?}: an https:// endpoint needs --ca-file (or WALSHIP_CA_FILE), \
                     the CA certificate that signed the nodes' certificates"
                ));
            }
            None => {}
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Http {
            client,
            base,
            token,
        })
    }

    /// A request builder with the token attached.
    pub fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Send `rb`, following up to 5 redirects (307/308, as the nodes answer
    /// a write sent to a follower) with the same method, body and token. A
    /// redirect from https to http is not followed (the token would travel in
    /// clear): its 3xx answer is returned.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let mut req = rb.build()?;
        for _ in 0..5 {
            let again = req.try_clone();
            let from_https = req.url().scheme() == "https";
            let r = self.client.execute(req).await?;
            if !matches!(r.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(r);
            }
            let next = r
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| r.url().join(l).ok());
            match (next, again) {
                (Some(url), Some(mut n)) if !(from_https && url.scheme() != "https") => {
                    *n.url_mut() = url;
                    req = n;
                }
                _ => return Ok(r),
            }
        }
        self.client.execute(req).await
    }

    /// GET a JSON document.
    pub async fn get_json(&self, url: &str) -> Result<Value, String> {
        let r = self
            .send(self.req(reqwest::Method::GET, url))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(error_text(&v, status));
        }
        Ok(v)
    }
}

fn error_text(v: &Value, status: reqwest::StatusCode) -> String {
    match (v["code"].as_str(), v["error"].as_str()) {
        (Some(c), Some(e)) => format!("{c}: {e}"),
        _ => format!("HTTP {status}: {v}"),
    }
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("walship: {msg}");
    EXIT_FAILED
}

/// `walship put` / `delete`.
pub async fn write(opts: &ClientOpts, key: &str, value: Option<&str>, ack: Option<&str>) -> i32 {
    let http = match Http::new(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    if let Some(a) = ack {
        if a.parse::<shipper::AckLevel>().is_err() {
            eprintln!(
                "walship: --ack {a:?}: expected local, remote_write, remote_flush or remote_apply"
            );
            return EXIT_USAGE;
        }
    }
    let mut url = format!("{}/v1/kv/{}", http.base, urlencode(key));
    if let Some(a) = ack {
        url.push_str(&format!("?ack={a}"));
    }
    let req = match value {
        Some(v) => http.req(reqwest::Method::PUT, &url).body(v.to_string()),
        None => http.req(reqwest::Method::DELETE, &url),
    };
    let r = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let status = r.status();
    let v: Value = match r.json().await {
        Ok(v) => v,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    if !status.is_success() {
        return fail(error_text(&v, status));
    }
    println!("{}", v["lsn"].as_str().unwrap_or(""));
    0
}

/// Percent-encode a key for a URL path segment.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `walship get`.
pub async fn get(opts: &ClientOpts, key: &str, min_lsn: Option<&str>, wait: Option<&str>) -> i32 {
    let http = match Http::new(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    let mut url = format!("{}/v1/kv/{}?", http.base, urlencode(key));
    if let Some(l) = min_lsn {
        if l.parse::<wal::Lsn>().is_err() {
            eprintln!("walship: --min-lsn {l:?}: expected an LSN like 0/16B3748");
            return EXIT_USAGE;
        }
        url.push_str(&format!("min_lsn={l}&"));
    }
    if let Some(w) = wait {
        if humantime::parse_duration(w).is_err() {
            eprintln!("walship: --wait {w:?}: expected a duration like 500ms or 5s");
            return EXIT_USAGE;
        }
        url.push_str(&format!("wait={w}&"));
    }
    let r = match http.send(http.req(reqwest::Method::GET, &url)).await {
        Ok(r) => r,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let status = r.status();
    let body = match r.bytes().await {
        Ok(b) => b,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    if status.is_success() {
        let mut out = std::io::stdout();
        let _ = out.write_all(&body);
        let _ = out.flush();
        return 0;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fail(error_text(&v, status))
}

/// `walship tail`.
pub async fn tail(opts: &ClientOpts, from: Option<&str>, follow: bool) -> i32 {
    let http = match Http::new(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    let mut from = match from {
        Some(f) => match f.parse::<wal::Lsn>() {
            Ok(l) => Some(l.to_string()),
            Err(_) => {
                eprintln!("walship: --from {f:?}: expected an LSN like 0/16B3748");
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    loop {
        let url = match &from {
            Some(f) => format!("{}/v1/log?from={f}&limit=1000", http.base),
            None => format!("{}/v1/log?limit=1000", http.base),
        };
        let r = match http.send(http.req(reqwest::Method::GET, &url)).await {
            Ok(r) => r,
            Err(e) => return fail(format!("{url}: {e}")),
        };
        let status = r.status();
        let text = match r.text().await {
            Ok(t) => t,
            Err(e) => return fail(format!("{url}: {e}")),
        };
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return fail(error_text(&v, status));
        }
        let mut n = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            println!(
                "{} term={} {} {}{}",
                v["lsn"].as_str().unwrap_or("?"),
                v["term"],
                v["kind"].as_str().unwrap_or("?"),
                v["key"].as_str().unwrap_or(""),
                v["value_b64"]
                    .as_str()
                    .map(|b| format!(" value_b64={b}"))
                    .unwrap_or_default()
            );
            if let Some(e) = v["end"].as_str() {
                from = Some(e.to_string());
            }
            n += 1;
        }
        if !follow && n < 1000 {
            return 0;
        }
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// POST an admin command to `url`; prints the JSON answer.
pub async fn admin(opts: &ClientOpts, path: &str, body: Value) -> i32 {
    let http = match Http::new(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    let url = format!("{}{}", http.base, path);
    let r = match http
        .send(http.req(reqwest::Method::POST, &url).json(&body))
        .await
    {
        Ok(r) => r,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return fail(error_text(&v, status));
    }
    println!("{v}");
    0
}

/// `walship checkpoint`: `POST /v1/admin/checkpoint` on the node at `--endpoint`
/// (no redirect: every node checkpoints its own state). Prints one line
/// (`checkpoint at X/X written (term T, N entries, B bytes)`, or `... already
/// covers the applied state` when nothing new was applied), or the JSON answer
/// with `--json`. Exit 1 with the node's reason when it fails.
pub async fn checkpoint(opts: &ClientOpts, json: bool) -> i32 {
    let http = match Http::new(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    let url = format!("{}/v1/admin/checkpoint", http.base);
    let r = match http.req(reqwest::Method::POST, &url).send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return fail(error_text(&v, status));
    }
    if json {
        println!("{v}");
        return 0;
    }
    match v["lsn"].as_str() {
        Some(lsn) => {
            let what = if v["written"].as_bool() == Some(true) {
                "written"
            } else {
                "already covers the applied state (nothing new to write)"
            };
            println!(
                "checkpoint at {lsn} {what} (term {}, {} entries, {} bytes)",
                v["term"], v["entries"], v["bytes"]
            );
        }
        None => println!("no checkpoint: nothing applied yet"),
    }
    0
}

/// `walship rebuild`: ask the node at `--endpoint` to rebuild itself from the
/// leader's checkpoint, show a progress bar fed by its `/status`, and return
/// once it streams again (0), or 1 with the reason when an attempt fails (the
/// node keeps retrying; `walship status` shows it).
pub async fn rebuild(opts: &ClientOpts) -> i32 {
    let http = match Http::new(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    let url = format!("{}/v1/admin/rebuild", http.base);
    let r = match http.send(http.req(reqwest::Method::POST, &url)).await {
        Ok(r) => r,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return fail(error_text(&v, status));
    }
    let node = v["node_id"].as_str().unwrap_or("?").to_string();
    let attempts0 = v["rebuild"]["attempts"].as_u64().unwrap_or(0);
    let completed0 = v["rebuild"]["completed"].as_u64().unwrap_or(0);
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg:14} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("starting");
    let status_url = format!("{}/status", http.base);
    let mut done_at: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        bar.tick();
        let doc = match http.get_json(&status_url).await {
            Ok(d) => d,
            // The node may be restarting; keep polling.
            Err(_) => continue,
        };
        let p = &doc["rebuild"];
        let phase = p["phase"].as_str().unwrap_or("?");
        let attempts = p["attempts"].as_u64().unwrap_or(0);
        let completed = p["completed"].as_u64().unwrap_or(0);
        bar.set_length(p["bytes_total"].as_u64().unwrap_or(0));
        bar.set_position(p["bytes_done"].as_u64().unwrap_or(0));
        bar.set_message(phase.to_string());
        if phase == "failed" && attempts > attempts0 {
            bar.abandon();
            return fail(format!(
                "rebuild of {node} failed: {} (the node retries by itself; see walship status)",
                p["last_error"].as_str().unwrap_or("unknown reason")
            ));
        }
        if completed > completed0 {
            let at = *done_at.get_or_insert_with(std::time::Instant::now);
            if doc["state"].as_str() == Some("streaming") {
                bar.finish_with_message("streaming");
                println!(
                    "rebuilt {node} from {}'s checkpoint at {} ({} bytes, {:.1} MB/s, {:.1}s); streaming",
                    p["leader"].as_str().unwrap_or("?"),
                    p["checkpoint_lsn"].as_str().unwrap_or("?"),
                    p["bytes_total"].as_u64().unwrap_or(0),
                    p["mb_per_s"].as_f64().unwrap_or(0.0),
                    p["elapsed_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                );
                return 0;
            }
            if at.elapsed() > Duration::from_secs(600) {
                bar.abandon();
                return fail(format!(
                    "{node} was rebuilt but has not streamed for 10 minutes (state {})",
                    doc["state"].as_str().unwrap_or("?")
                ));
            }
        }
    }
}

/// `walship switchover`: find the leader, ask it, wait.
pub async fn switchover(opts: &ClientOpts, to: Option<String>) -> i32 {
    admin(opts, "/v1/admin/switchover", serde_json::json!({"to": to})).await
}

/// `walship failover --to NODE`: sent to NODE's own HTTP address.
pub async fn failover(opts: &ClientOpts, to: &str, force: bool) -> i32 {
    admin(
        opts,
        "/v1/admin/failover",
        serde_json::json!({"to": to, "force": force}),
    )
    .await
}

/// `walship status`.
pub async fn status(opts: &ClientOpts, json: bool, watch: bool) -> i32 {
    let http = match Http::new(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    loop {
        let doc = match cluster_status(&http).await {
            Ok(d) => d,
            Err(e) => return fail(e),
        };
        if json {
            println!("{doc}");
        } else {
            if watch {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render_table(&doc));
        }
        if !watch {
            return 0;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Query the endpoint, then every member, into one document `{"nodes": [...]}`.
pub async fn cluster_status(http: &Http) -> Result<Value, String> {
    let first = http.get_json(&format!("{}/status", http.base)).await?;
    let members = first["members"].as_array().cloned().unwrap_or_default();
    let mut nodes = Vec::new();
    let mut leader_doc: Option<Value> = None;
    for m in &members {
        let id = m["id"].as_str().unwrap_or("?");
        let addr = m["http"].as_str().unwrap_or("");
        let doc = if id == first["node_id"].as_str().unwrap_or("") {
            Ok(first.clone())
        } else {
            let scheme = if http.base.starts_with("https://") {
                "https"
            } else {
                "http"
            };
            http.get_json(&format!("{scheme}://{addr}/status")).await
        };
        match doc {
            Ok(d) => {
                if d["role"] == "leader" {
                    leader_doc = Some(d.clone());
                }
                nodes.push(d);
            }
            Err(e) => nodes.push(serde_json::json!({"node_id": id, "http": addr, "role": "unreachable", "state": "unreachable", "error": e})),
        }
    }
    // Lag as the leader sees it.
    if let Some(l) = &leader_doc {
        for n in nodes.iter_mut() {
            if let Some(f) = l["followers"]
                .as_array()
                .and_then(|fs| fs.iter().find(|f| f["id"] == n["node_id"]))
            {
                n["lag_bytes"] = f["lag_bytes"].clone();
                n["lag_seconds"] = f["lag_seconds"].clone();
                n["sync_state"] = f["sync_state"].clone();
                n["safe_wal_size"] = f["safe_wal_size"].clone();
                // The leader's retention cut it loose: that is its state, even
                // while it is down or does not know yet.
                if f["state"] == "needs_rebuild" {
                    n["state"] = f["state"].clone();
                }
            }
        }
    }
    for (n, m) in nodes.iter_mut().zip(members.iter()) {
        n["address"] = m["addr"].clone();
    }
    Ok(serde_json::json!({"cluster_id": first["cluster_id"], "nodes": nodes}))
}

/// A `patronictl list`-like table.
pub fn render_table(doc: &Value) -> String {
    let headers = [
        "Node",
        "Address",
        "Role",
        "State",
        "Term",
        "Flush LSN",
        "Apply LSN",
        "Lag bytes",
        "Lag time",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for n in doc["nodes"].as_array().cloned().unwrap_or_default() {
        let s = |k: &str| match &n[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        };
        let lag_time = n["lag_seconds"]
            .as_f64()
            .map(|v| format!("{:.3}s", v))
            .unwrap_or_default();
        rows.push(vec![
            s("node_id"),
            s("address"),
            s("role"),
            s("state"),
            s("term"),
            s("flush_lsn"),
            s("apply_lsn"),
            s("lag_bytes"),
            lag_time,
        ]);
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let sep: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("| {:<w$} ", c, w = widths[i]))
            .collect::<String>()
            + "|\n"
    };
    let mut out = format!("Cluster: {}\n", doc["cluster_id"].as_str().unwrap_or("?"));
    out.push_str(&sep);
    out.push_str(&line(headers.iter().map(|s| s.to_string()).collect()));
    out.push_str(&sep);
    for r in rows {
        out.push_str(&line(r));
    }
    out.push_str(&sep);
    out
}
