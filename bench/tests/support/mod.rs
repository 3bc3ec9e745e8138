//! A small fake gateway for the load generator's tests: axum on a loopback
//! port, serving `POST /ai/run/{model}` with a scripted Server-Sent Events
//! stream and recording the bodies it received.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

/// Scripted response of the fake to every request.
#[derive(Clone, Debug)]
pub struct Script {
    /// Wait before each event, with the event's `data:` text.
    pub events: Vec<(Duration, String)>,
    /// Requests whose 0-based arrival index is a multiple of this get
    /// `status` instead of the stream.
    pub fail_every: Option<(u64, StatusCode)>,
}

impl Script {
    /// Builds a stream of `texts` events, each after `gap` (the first after
    /// `first`), then a usage event with `completion_tokens` and `[DONE]`.
    pub fn tokens(first: Duration, gap: Duration, texts: usize, completion_tokens: u64) -> Script {
        let mut events = Vec::new();
        for index in 0..texts {
            let wait = if index == 0 { first } else { gap };
            events.push((wait, format!(r#"{{"response":"tok{index} "}}"#)));
        }
        let usage = format!(
            r#"{{"response":"","usage":{{"prompt_tokens":4,"completion_tokens":{completion_tokens},"total_tokens":{}}}}}"#,
            completion_tokens + 4
        );
        events.push((Duration::ZERO, usage));
        events.push((Duration::ZERO, "[DONE]".to_string()));
        Script {
            events,
            fail_every: None,
        }
    }
}

struct Shared {
    script: Script,
    arrivals: AtomicU64,
    bodies: Mutex<Vec<Value>>,
    authorizations: Mutex<Vec<Option<String>>>,
}

/// A running fake gateway; it stops when dropped.
pub struct FakeGateway {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGateway {
    pub async fn start(script: Script) -> FakeGateway {
        let shared = Arc::new(Shared {
            script,
            arrivals: AtomicU64::new(0),
            bodies: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/ai/run/{*model}", post(generate))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGateway {
            addr,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `Authorization` headers received so far, in arrival order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.authorizations.lock().unwrap().clone()
    }

    /// Bodies received so far, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.shared.bodies.lock().unwrap().clone()
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn generate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let arrival = shared.arrivals.fetch_add(1, Ordering::SeqCst);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    shared
        .authorizations
        .lock()
        .unwrap()
        .push(authorization.map(str::to_string));
    shared.bodies.lock().unwrap().push(body);
    if let Some((every, status)) = shared.script.fail_every {
        if arrival % every == 0 {
            return (
                status,
                r#"{"success":false,"errors":[{"code":3040,"message":"out of capacity"}]}"#,
            )
                .into_response();
        }
    }
    let events = futures::stream::unfold(
        shared.script.events.clone().into_iter(),
        |mut rest| async move {
            let (wait, data) = rest.next()?;
            tokio::time::sleep(wait).await;
            let chunk = Bytes::from(format!("data: {data}\n\n"));
            Some((Ok::<_, std::convert::Infallible>(chunk), rest))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}
