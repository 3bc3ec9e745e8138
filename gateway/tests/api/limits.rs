//! Limits and protection: body size, content type, API keys,
//! back-pressure, unavailability, deadlines, readiness, metrics and trace
//! context.

use std::time::Duration;

use serde_json::Value;
use wick_gateway::GatewayConfig;

use crate::fake::{Script, Step};
use crate::streaming::read_events;
use crate::{eventually, Cluster, WAIT, WORKERS_AI_ROUTE};

#[tokio::test]
async fn oversized_body_gets_413() {
    let cluster = Cluster::hello().await;
    let huge = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(10 * 1024 * 1024));
    for body in [huge.clone(), huge.replacen('{', r#"{"stream":true,"#, 1)] {
        let (status, json) = cluster.post_json(WORKERS_AI_ROUTE, &body).await;
        assert_eq!(status, 413, "{json}");
        assert_eq!(json["errors"][0]["code"], 3006);
    }
    assert_eq!(cluster.fake.record.request_count(), 0);
}

#[tokio::test]
async fn content_type_rule() {
    let cluster = Cluster::hello().await;
    let send = |content_type: Option<&'static str>| {
        let mut request = cluster
            .client
            .post(cluster.url(WORKERS_AI_ROUTE))
            .body(r#"{"prompt":"hi"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    let plain = send(Some("text/plain")).await.unwrap();
    assert_eq!(plain.status(), 415);
    let json: Value = plain.json().await.unwrap();
    assert_eq!(json["errors"][0]["code"], 5006);
    assert!(json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("application/json"));
    assert_eq!(send(None).await.unwrap().status(), 200);
    assert_eq!(
        send(Some("application/json; charset=utf-8"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(cluster.fake.record.request_count(), 2);
}

#[tokio::test]
async fn api_keys_required_when_set() {
    let cluster = Cluster::start(
        |_| Script::hello(),
        |config| config.api_keys = vec!["key-one".into(), "key-two".into()],
    )
    .await;

    let post = |key: Option<&str>, path: &str| {
        let mut request = cluster
            .client
            .post(cluster.url(path))
            .body(r#"{"prompt":"hi"}"#);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let missing = post(None, WORKERS_AI_ROUTE).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let json: Value = missing.json().await.unwrap();
    assert_eq!(json["errors"][0]["code"], 10000);

    assert_eq!(
        post(Some("key-on"), WORKERS_AI_ROUTE)
            .await
            .unwrap()
            .status(),
        401
    );
    let openai = post(Some("wrong"), "/v1/completions").await.unwrap();
    assert_eq!(openai.status(), 401);
    let json: Value = openai.json().await.unwrap();
    assert_eq!(json["error"]["type"], "authentication_error");

    assert_eq!(
        post(Some("key-two"), WORKERS_AI_ROUTE)
            .await
            .unwrap()
            .status(),
        200
    );
    let health = cluster
        .client
        .get(cluster.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "probes need no key");
    assert_eq!(cluster.fake.record.request_count(), 1);
}

#[tokio::test]
async fn scheduler_statuses_map_to_http() {
    let cases = [
        (
            tonic::Status::resource_exhausted("queue full (2 waiting)"),
            429,
            3040,
        ),
        (tonic::Status::unavailable("no worker connected"), 503, 3040),
        (
            tonic::Status::deadline_exceeded("deadline passed"),
            408,
            3007,
        ),
        (tonic::Status::internal("bug"), 500, 5000),
    ];
    for (status, http, code) in cases {
        let reject = status.clone();
        let cluster = Cluster::start(move |_| Script::reject(reject.clone()), |_| {}).await;
        for body in [r#"{"prompt":"hi"}"#, r#"{"prompt":"hi","stream":true}"#] {
            let response = cluster.post(WORKERS_AI_ROUTE, body).await;
            assert_eq!(response.status().as_u16(), http, "{status:?} {body}");
            if http == 429 || http == 503 {
                assert_eq!(response.headers()["retry-after"], "1");
            }
            let json: Value = response.json().await.unwrap();
            assert_eq!(json["errors"][0]["code"], code, "{status:?} {body}");
            assert!(json["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(status.message()));
        }
    }
}

#[tokio::test]
async fn request_deadline_gives_408() {
    let cluster = Cluster::start(
        |_| {
            Script::steps(vec![
                Step::Sleep(Duration::from_secs(30)),
                Step::Delta("late"),
            ])
        },
        |config| {
            config.request_timeout = Duration::from_millis(500);
            config.sse_keep_alive = Duration::from_millis(100);
        },
    )
    .await;

    let (status, json) = cluster
        .post_json(WORKERS_AI_ROUTE, r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(status, 408, "{json}");
    assert_eq!(json["errors"][0]["code"], 3007);

    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    assert_eq!(
        response.status(),
        200,
        "the deadline passes after the headers went out"
    );
    let events = read_events(response).await;
    let error: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(error["errors"][0]["code"], 3007);
    assert_eq!(events[1], "[DONE]");
    let record = cluster.fake.record.clone();
    assert!(eventually(|| record.dropped.load(std::sync::atomic::Ordering::SeqCst) == 2).await);
}

#[tokio::test]
async fn readiness_follows_scheduler_health() {
    let cluster = Cluster::hello().await;
    let readyz = || async {
        cluster
            .client
            .get(cluster.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while readyz().await != 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz().await, 200);
    cluster.fake.set_not_serving().await;
    while readyz().await != 503 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz().await, 503);
}

#[tokio::test]
async fn scheduler_down_is_not_fatal() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = GatewayConfig {
        scheduler_url: url,
        readiness_poll_interval: Duration::from_millis(50),
        ..GatewayConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(wick_gateway::serve(listener, config, async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let response = client
        .post(format!("{base}/ai/run/@cf/microsoft/phi-2"))
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    let _ = stop.send(());
    let result = tokio::time::timeout(WAIT, gateway)
        .await
        .expect("gateway stops")
        .unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn metrics_count_requests() {
    let cluster = Cluster::hello().await;
    let (status, _) = cluster
        .post_json(WORKERS_AI_ROUTE, r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(status, 200);
    let events = read_events(
        cluster
            .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
            .await,
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text = cluster
        .client
        .get(cluster.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let route = r#"route="/client/v4/accounts/{account_id}/ai/run/{*model}""#;
    assert!(
        text.lines()
            .any(|line| line.starts_with("wick_gateway_requests_total")
                && line.contains(route)
                && line.contains(r#"status="200""#)),
        "{text}"
    );
    for name in [
        "wick_gateway_request_duration_seconds",
        "wick_gateway_time_to_first_byte_seconds",
        "wick_gateway_active_streams",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
}

#[tokio::test]
async fn traceparent_reaches_scheduler() {
    let cluster = Cluster::hello().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = cluster
        .client
        .post(cluster.url(WORKERS_AI_ROUTE))
        .header("traceparent", traceparent)
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = cluster
        .fake
        .record
        .traceparents
        .lock()
        .unwrap()
        .last()
        .cloned()
        .flatten();
    assert_eq!(seen.as_deref(), Some(traceparent));
}

#[tokio::test]
async fn unknown_route_gets_json_404() {
    let cluster = Cluster::hello().await;
    let response = cluster
        .client
        .get(cluster.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let json: Value = response.json().await.unwrap();
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/nothing"));
}

#[tokio::test]
async fn unavailable_scheduler_is_retried() {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let cluster = Cluster::start(
        move |_| match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Script::reject(tonic::Status::unavailable("scheduler restarting")),
            _ => Script::hello(),
        },
        |_| {},
    )
    .await;

    let (status, json) = cluster
        .post_json(WORKERS_AI_ROUTE, r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["result"]["response"], "Hello world");
    assert_eq!(cluster.fake.record.request_count(), 2);
}

#[tokio::test]
async fn slow_body_times_out() {
    let cluster = Cluster::start(
        |_| Script::hello(),
        |config| config.request_timeout = Duration::from_millis(300),
    )
    .await;

    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<&'static str, std::io::Error>>(1);
    sender.send(Ok(r#"{"prompt":"#)).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let response = cluster
        .client
        .post(cluster.url(WORKERS_AI_ROUTE))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["errors"][0]["code"], 3007);
    drop(sender);
    assert_eq!(cluster.fake.record.request_count(), 0);
}

#[tokio::test]
async fn shutdown_cuts_streams_after_grace() {
    let never = std::sync::Arc::new(tokio::sync::Notify::new());
    let script_never = never.clone();
    let mut cluster = Cluster::start(
        move |_| {
            Script::steps(vec![
                Step::Delta("one"),
                Step::WaitFor(script_never.clone()),
            ])
        },
        |config| config.shutdown_grace = Duration::from_millis(200),
    )
    .await;

    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut body))
        .await
        .unwrap();
    assert!(first.is_some(), "the stream started");

    cluster.shut_down().await;
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut body))
        .await
        .unwrap()
    {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.contains("the gateway is shutting down"), "{rest:?}");
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest:?}");

    let record = cluster.fake.record.clone();
    assert!(eventually(|| record.dropped.load(std::sync::atomic::Ordering::SeqCst) == 1).await);
}
