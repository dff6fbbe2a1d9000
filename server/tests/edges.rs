//! The server's edges, through real sockets: timeouts on slow and silent connections, connection
//! caps per address and in total (distinct loopback source addresses: 127.0.0.2, …), the same
//! sign-in time for known and unknown e-mails, throttling of failed sign-ins and call tokens,
//! capped audit rows, the metrics key, trusted proxies, TLS and the built-in web pages.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use televisit_server::secrets::Clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `server` from the loopback address `from` (127.0.0.x).
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// An HTTP client whose connections come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(from.parse::<IpAddr>().unwrap()).build().unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and
/// when it closed.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Instant>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&received).into(), Some(Instant::now()))
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into(), None),
        }
    }
}

async fn healthz(client: &reqwest::Client, server: &TestServer) -> u16 {
    client.get(server.url("/healthz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn slow_header_and_silent_connections_are_closed_while_a_normal_client_is_served() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.header_read_timeout_seconds = 1;
        c.http_idle_timeout_seconds = 30;
    })
    .await;
    let addr = server.server.addr;
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Slow headers: one byte every 100 ms, never finishing the head.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(tokio::spawn(async move {
            for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            unreachable!("the cycle never ends");
        }));
    }
    // Meanwhile a normal client is answered.
    assert_eq!(healthz(&server.http, &server).await, 200);

    // 1 s, with room for a loaded machine; without the timeout hyper's default would be 30 s.
    let bound = Duration::from_secs(4);
    for mut stream in silent {
        let (_, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
        let closed = closed.expect("a silent connection is closed");
        assert!(closed - opened < bound, "silent connection closed after {:?}", closed - opened);
    }
    for task in slow {
        let closed =
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("slow header closed").unwrap();
        assert!(
            closed - opened < bound + Duration::from_millis(200),
            "slow header closed after {:?}",
            closed - opened
        );
    }
    assert_eq!(healthz(&server.http, &server).await, 200);
    server.server.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_stalls_is_closed_by_the_idle_timeout() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.header_read_timeout_seconds = 10;
        c.http_idle_timeout_seconds = 1;
    })
    .await;
    let mut stream = TcpStream::connect(server.server.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /medical/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a")
        .await
        .unwrap();
    let (_, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
    let after = closed.expect("the stalled connection is closed") - started;
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(4), "closed after {after:?}");
    server.server.stop().await;
}

#[tokio::test]
async fn connection_caps_hold_per_address_and_in_total_while_another_address_still_joins() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.max_connections_per_address = 5;
        c.max_connections = 10;
        c.header_read_timeout_seconds = 30;
    })
    .await;
    let addr = server.server.addr;
    let visit = server.started_visit().await;
    // Two WebSockets (they keep their place after the upgrade) and three silent connections
    // from one address.
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let tcp = connect_from("127.0.0.2", addr).await;
        sockets.push(tokio_tungstenite::client_async(server.ws_url(), tcp).await.expect("WebSocket").0);
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", addr).await);
    }
    let mut over = connect_from("127.0.0.2", addr).await;
    let (reply, closed) = until_closed(&mut over, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the sixth connection from one address is closed");
    assert!(reply.starts_with("HTTP/1.1 503") && reply.contains("Retry-After: 2"), "{reply}");
    assert!(reply.contains(r#""code":"server_busy""#), "{reply}");

    // Another address still joins the call: the join API, then the WebSocket.
    let patient = client_from("127.0.0.3");
    let joined = patient
        .post(server.url("/api/video-call/join"))
        .bearer_auth(&visit.patient_token)
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 200);
    let tcp = connect_from("127.0.0.3", addr).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(server.ws_url(), tcp).await.expect("WebSocket from another address");
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"type": "join", "token": visit.patient_token}).to_string(),
    ))
    .await
    .unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("\"joined\""), "{first}");

    // Fill up to the total of 10 from a third address (the harness's and the patient's
    // connections count too); then a fresh address is refused; one closing makes room.
    let mut fill = Vec::new();
    loop {
        let mut stream = connect_from("127.0.0.4", addr).await;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await {
            Err(_) => fill.push(stream),
            Ok(_) => break,
        }
        assert!(fill.len() <= 5, "no cap reached");
    }
    let mut refused = connect_from("127.0.0.5", addr).await;
    let (reply, _) = until_closed(&mut refused, Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "total cap: {reply}");
    drop(fill.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(healthz(&client_from("127.0.0.5"), &server).await, 200, "a place was freed");
    server.server.stop().await;
}

/// The sign-in form's CSRF cookie and value.
async fn login_form(client: &reqwest::Client, server: &TestServer) -> (String, String) {
    let form = client.get(server.url("/medical/login")).send().await.unwrap();
    let cookie = form.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = form.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    (cookie, csrf)
}

async fn sign_in(
    client: &reqwest::Client,
    server: &TestServer,
    (cookie, csrf): &(String, String),
    email: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(server.url("/medical/login"))
        .header("cookie", cookie)
        .form(&[("email", email), ("password", password), ("csrf", csrf)])
        .send()
        .await
        .unwrap()
}

async fn web_doctor(server: &TestServer, email: &str) {
    server
        .clinic(
            "/api/clinic/doctors",
            json!({"display_name": DOCTOR_NAME, "email": email, "password": DOCTOR_PASSWORD}),
        )
        .await;
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn a_wrong_password_takes_as_long_for_an_unknown_email_as_for_a_known_one() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| c.failed_sign_ins_per_minute = 1000).await;
    web_doctor(&server, "known@clinic.test").await;
    let form = login_form(&server.http, &server).await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..40 {
        // Interleaved, so that load on the machine falls on both alike.
        for (email, samples) in [("known@clinic.test", &mut known), ("nobody@clinic.test", &mut unknown)] {
            let started = Instant::now();
            let response = sign_in(&server.http, &server, &form, email, &format!("wrong password {i}")).await;
            samples.push(started.elapsed());
            assert_eq!(response.status(), 401);
        }
    }
    let (known, unknown) = (median(known), median(unknown));
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    println!("median sign-in: known e-mail {known:?}, unknown e-mail {unknown:?}, ratio {ratio:.2}");
    assert!((0.67..1.5).contains(&ratio), "known {known:?} vs unknown {unknown:?}");
    server.server.stop().await;
}

async fn error_of(response: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = response.status().as_u16();
    let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_address_with_retry_after() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| c.failed_sign_ins_per_minute = 3).await;
    web_doctor(&server, "doc@clinic.test").await;
    let form = login_form(&server.http, &server).await;
    for _ in 0..3 {
        let response = sign_in(&server.http, &server, &form, "doc@clinic.test", "guess guess guess").await;
        assert_eq!(response.status(), 401);
    }
    let (status, retry, body) =
        error_of(sign_in(&server.http, &server, &form, "doc@clinic.test", DOCTOR_PASSWORD).await).await;
    assert_eq!(status, 429, "even the right password waits: {body}");
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "Retry-After {retry:?}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");

    // Another address signs in.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let other_form = login_form(&other, &server).await;
    let response = sign_in(&other, &server, &other_form, "doc@clinic.test", DOCTOR_PASSWORD).await;
    assert_eq!(response.status(), 303);
    server.server.stop().await;
}

#[tokio::test]
async fn a_flood_of_wrong_call_tokens_is_throttled_and_writes_few_audit_rows() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let before = server.audit(None).await.len();
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let (http, url) = (server.http.clone(), server.url("/api/video-call/join"));
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..100 {
                let token = format!("tv1.9999999999.{:0>43}", format!("{worker}x{i}"));
                let response = http.post(&url).bearer_auth(token).send().await.unwrap();
                seen.push(error_of(response).await);
            }
            seen
        }));
    }
    for task in tasks {
        for (status, retry, body) in task.await.unwrap() {
            *statuses.entry(status).or_default() += 1;
            if status == 429 {
                assert!(retry.is_some(), "429 without Retry-After");
                assert_eq!(body["error"]["code"], "rate_limited");
            }
        }
    }
    let rows = server.audit(None).await.len() - before;
    println!("2000 wrong tokens in {:?}: {statuses:?}, {rows} audit rows", started.elapsed());
    // 30 failures per minute by default; requests already in flight when the 30th fails may add
    // a few (one per concurrent worker at most).
    let refused = statuses.get(&401).copied().unwrap_or(0);
    assert!((30..50).contains(&refused), "{statuses:?}");
    assert_eq!(statuses.get(&429).copied().unwrap_or(0) + refused, 2000, "{statuses:?}");
    assert!(rows <= 30, "{rows} audit rows for 2000 refusals");
    server.server.stop().await;
}

#[tokio::test]
async fn wrong_clinic_keys_and_doctor_app_tokens_count_towards_the_same_throttle() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| c.failed_tokens_per_minute = 4).await;
    let (appointment_id, doctor_api_token) = server.appointment().await;
    let status_path = format!("/api/appointments/{appointment_id}/video-call/status");
    for _ in 0..2 {
        let wrong_key = server.http.post(server.url("/api/clinic/patients")).bearer_auth("guess");
        let response = wrong_key.json(&json!({"display_name": "x"})).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(server.call("GET", &status_path, "tvd.guess").await.0, 401);
    }
    // Used up: even the right credentials wait (a right guess must not be told apart).
    let (status, retry, body) = error_of(
        server
            .http
            .post(server.url("/api/clinic/patients"))
            .bearer_auth(CLINIC_KEY)
            .json(&json!({"display_name": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")));
    assert!(retry.is_some());
    assert_eq!(server.call("GET", &status_path, &doctor_api_token).await.0, 429);
    // Another address is not affected.
    let other = client_from("127.0.0.2").get(server.url(&status_path)).bearer_auth(&doctor_api_token);
    assert_eq!(other.send().await.unwrap().status(), 200);
    server.server.stop().await;
}

#[tokio::test]
async fn metrics_need_the_bearer_key() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let (status, _, body) = error_of(server.http.get(server.url("/metrics")).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let wrong = server.http.get(server.url("/metrics")).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = server.http.get(server.url("/metrics")).bearer_auth(METRICS_KEY).send().await.unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("televisit_"));
    server.server.stop().await;

    let db = TempDb::new();
    let keyless = TestServer::start_with(&db, Clock::default(), |c| c.metrics_key = None).await;
    let (status, _, body) = error_of(keyless.http.get(keyless.url("/metrics")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("--metrics-key"), "{body}");
    keyless.server.stop().await;
}

/// `--metrics-listen`: /metrics on its own address (an internal interface) and not on the main one;
/// the metrics key, when set, is still needed there.
#[tokio::test]
async fn metrics_on_a_separate_address_leave_the_main_one_and_keep_the_key() {
    let db = TempDb::new();
    let local: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.metrics_key = None;
        c.metrics_listen = Some(local);
    })
    .await;
    let metrics_url = format!("http://{}/metrics", server.server.metrics_addr.unwrap());
    let open = server.http.get(&metrics_url).send().await.unwrap();
    assert_eq!(open.status(), 200);
    assert!(open.text().await.unwrap().contains("televisit_signaling_rooms 0"));
    let main = server.http.get(server.url("/metrics")).bearer_auth(METRICS_KEY).send().await.unwrap();
    assert_eq!(main.status(), 404, "not on the main address");
    // The separate address serves nothing else.
    let other = format!("http://{}/healthz", server.server.metrics_addr.unwrap());
    assert_eq!(server.http.get(other).send().await.unwrap().status(), 404);
    server.server.stop().await;

    let db = TempDb::new();
    let keyed = TestServer::start_with(&db, Clock::default(), |c| c.metrics_listen = Some(local)).await;
    let metrics_url = format!("http://{}/metrics", keyed.server.metrics_addr.unwrap());
    let (status, _, body) = error_of(keyed.http.get(&metrics_url).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let wrong = keyed.http.get(&metrics_url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = keyed.http.get(&metrics_url).bearer_auth(METRICS_KEY).send().await.unwrap();
    assert_eq!(right.status(), 200);
    keyed.server.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.trusted_proxies = vec!["127.0.0.2".parse().unwrap()];
        c.failed_tokens_per_minute = 2;
    })
    .await;
    let join = |client: reqwest::Client, forwarded: &'static str| {
        let url = server.url("/api/video-call/join");
        async move {
            let response = client
                .post(url)
                .bearer_auth(format!("tv1.9999999999.{}", "a".repeat(43)))
                .header("x-forwarded-for", forwarded)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    let proxy = client_from("127.0.0.2");
    let stranger = client_from("127.0.0.3");
    // Through the proxy: the client named by the proxy (after a forged entry) is audited and
    // throttled, each client on its own.
    assert_eq!(join(proxy.clone(), "198.51.100.1, 203.0.113.7").await, 401);
    assert_eq!(join(proxy.clone(), "203.0.113.7").await, 401);
    assert_eq!(join(proxy.clone(), "203.0.113.7").await, 429, "203.0.113.7 used up its tries");
    assert_eq!(join(proxy.clone(), "203.0.113.8").await, 401, "another client behind the proxy");
    // Not a trusted proxy: the header is ignored; the socket's address counts.
    assert_eq!(join(stranger.clone(), "203.0.113.9").await, 401);
    let addresses: Vec<String> = server.audit(None).await.into_iter().filter_map(|e| e.remote_addr).collect();
    assert_eq!(addresses, ["203.0.113.7", "203.0.113.7", "203.0.113.7", "203.0.113.8", "127.0.0.3"]);
    assert_eq!(join(stranger, "203.0.113.10").await, 401);
    server.server.stop().await;
}

#[tokio::test]
async fn https_with_the_configured_certificate_and_hsts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("televisit-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, private) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&private, key.signing_key.serialize_pem()).unwrap();
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| c.tls = Some((cert, private))).await;
    let port = server.server.addr.port();
    assert!(server.server.url().starts_with("https://"));
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(key.cert.der()).unwrap()])
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let response = client.get(format!("https://localhost:{port}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let hsts = response.headers().get("strict-transport-security").expect("HSTS").to_str().unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");
    let page = client
        .get(format!("https://localhost:{port}/medical/video-call/test-devices/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // Plain HTTP to the TLS port gets nothing.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    server.server.stop().await;
    let _ = std::fs::remove_dir_all(dir);

    let db = TempDb::new();
    let http = TestServer::start(&db).await;
    let response = http.http.get(http.url("/healthz")).send().await.unwrap();
    assert!(response.headers().get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    http.server.stop().await;
}

#[tokio::test]
async fn the_pages_are_built_in_and_a_web_dir_overrides_them() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    // The binary, run from an empty folder with no web folder given.
    let cwd = std::env::temp_dir().join(format!("televisit-bin-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&cwd).unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_televisit"))
        .current_dir(&cwd)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", "sqlite://t.db"])
        .env_remove("TELEVISIT_WEB_DIR")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child, cwd);
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the binary serves");
    for (path, file, kind) in [
        ("/medical/video-call/test-devices/", "test-devices.html", "text/html"),
        ("/static/call.js", "static/call.js", "javascript"),
        ("/static/style.css", "static/style.css", "text/css"),
    ] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.contains(kind), "{path}: {content_type}");
        assert_eq!(
            response.text().await.unwrap(),
            std::fs::read_to_string(web.join(file)).unwrap(),
            "{path}"
        );
    }
    for path in ["/static/%2e%2e/call.html", "/static/nothing.js"] {
        let missing = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(missing.status(), 404, "{path}");
    }

    // --web-dir wins (working on the pages).
    let dir = std::env::temp_dir().join(format!("televisit-web-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::fs::write(dir.join("test-devices.html"), "<p>edited page</p>").unwrap();
    std::fs::write(dir.join("static/call.js"), "// edited script").unwrap();
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| c.web_dir = Some(dir.clone())).await;
    let page = server.http.get(server.url("/medical/video-call/test-devices/")).send().await.unwrap();
    assert_eq!(page.text().await.unwrap(), "<p>edited page</p>");
    let script = server.http.get(server.url("/static/call.js")).send().await.unwrap();
    assert_eq!(script.text().await.unwrap(), "// edited script");
    server.server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A child process killed (and its folder removed) when the test ends, passed or not.
struct KillOnDrop(std::process::Child, std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}
