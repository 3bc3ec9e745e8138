//! Server-Sent Events, read with a real SSE client: framing, usage,
//! `[DONE]`, headers, keep-alive, errors mid-stream and disconnects.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::timeout;
use wick_proto::v1::{error, FinishReason, ToolCall};

use crate::fake::{Script, Step};
use crate::{eventually, Cluster, WAIT, WORKERS_AI_ROUTE};

/// Reads every `data:` payload of an SSE response, with the SSE parser of
/// `eventsource-stream`.
pub async fn read_events(response: reqwest::Response) -> Vec<String> {
    let mut events = response.bytes_stream().eventsource();
    let mut data = Vec::new();
    while let Some(event) = timeout(WAIT, events.next())
        .await
        .expect("next event in time")
    {
        data.push(event.expect("well-formed SSE").data);
    }
    data
}

#[tokio::test]
async fn stream_framing_usage_and_done() {
    let cluster = Cluster::hello().await;
    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");

    let events = read_events(response).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let payloads: Vec<Value> = events[..3]
        .iter()
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(payloads[0]["response"], "Hello");
    assert_eq!(payloads[1]["response"], " world");
    assert_eq!(payloads[2]["response"], "");
    assert_eq!(payloads[2]["usage"]["prompt_tokens"], 5);
    assert_eq!(payloads[2]["usage"]["completion_tokens"], 2);
    assert_eq!(payloads[2]["usage"]["total_tokens"], 7);
    assert_eq!(events[3], "[DONE]");
}

#[tokio::test]
async fn stream_text_matches_non_stream() {
    let cluster = Cluster::hello().await;
    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    let events = read_events(response).await;
    let streamed: String = events
        .iter()
        .filter(|data| *data != "[DONE]")
        .map(|data| {
            serde_json::from_str::<Value>(data).unwrap()["response"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let (_, json) = cluster
        .post_json(WORKERS_AI_ROUTE, r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(json["result"]["response"], streamed.as_str());
    assert_eq!(json["success"], true);
    assert_eq!(json["errors"], serde_json::json!([]));
    assert_eq!(json["result"]["usage"]["total_tokens"], 7);
    assert!(json["result"].get("tool_calls").is_none());
}

#[tokio::test]
async fn first_event_before_last_is_produced() {
    let release = Arc::new(Notify::new());
    let script_release = release.clone();
    let cluster = Cluster::start(
        move |_| {
            Script::steps(vec![
                Step::Delta("first"),
                Step::WaitFor(script_release.clone()),
                Step::Delta("last"),
                Step::Finish(FinishReason::Length, Vec::new()),
            ])
        },
        |_| {},
    )
    .await;

    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    let mut events = response.bytes_stream().eventsource();
    // The fake sends "last" only after this test saw "first", so the first
    // event cannot have been held back until the end.
    let first = timeout(WAIT, events.next())
        .await
        .expect("first event in time")
        .unwrap()
        .unwrap();
    assert_eq!(first.data, r#"{"response":"first"}"#);

    release.notify_one();
    let rest: Vec<String> = timeout(WAIT, events.map(|event| event.unwrap().data).collect())
        .await
        .unwrap();
    assert_eq!(
        rest.first().map(String::as_str),
        Some(r#"{"response":"last"}"#)
    );
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn keep_alive_comments_while_queued() {
    let cluster = Cluster::start(
        |_| {
            Script::steps(vec![
                Step::Sleep(Duration::from_millis(900)),
                Step::Delta("late"),
                Step::Finish(FinishReason::Stop, Vec::new()),
            ])
        },
        |config| config.sse_keep_alive = Duration::from_millis(100),
    )
    .await;

    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    assert_eq!(response.status(), 200);
    let text = timeout(WAIT, response.text()).await.unwrap().unwrap();
    let comments = text.lines().filter(|line| *line == ": keep-alive").count();
    assert!(
        comments >= 2,
        "keep-alive comments before the first token: {text:?}"
    );
    let before_text = text.split("data:").next().unwrap();
    assert!(before_text.contains(": keep-alive"), "{text:?}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text:?}");
}

#[tokio::test]
async fn error_mid_stream_is_one_event() {
    let cluster = Cluster::start(
        |_| {
            Script::steps(vec![
                Step::Delta("partial"),
                Step::Sleep(Duration::from_millis(300)),
                Step::ErrorEvent(error::Code::WorkerLost, "worker 2 disconnected"),
                Step::Sleep(Duration::from_secs(30)),
            ])
        },
        |_| {},
    )
    .await;

    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0], r#"{"response":"partial"}"#);
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(error["success"], false);
    assert_eq!(error["errors"][0]["code"], 3040);
    let message = error["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("worker 2 disconnected"), "{message}");
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn early_error_gets_http_status() {
    let cluster = Cluster::start(
        |_| {
            Script::steps(vec![Step::StatusItem(tonic::Status::invalid_argument(
                "prompt has 2000 tokens and max_tokens is 100: 2100 exceeds the context of 2048 tokens",
            ))])
        },
        |_| {},
    )
    .await;
    for body in [r#"{"prompt":"hi","stream":true}"#, r#"{"prompt":"hi"}"#] {
        let (status, json) = cluster.post_json(WORKERS_AI_ROUTE, body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(json["errors"][0]["code"], 5006, "{body}");
        let message = json["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("2000 tokens") && message.contains("2048"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn disconnect_cancels_upstream() {
    let never = Arc::new(Notify::new());
    let script_never = never.clone();
    let cluster = Cluster::start(
        move |_| {
            Script::steps(vec![
                Step::Delta("one"),
                Step::WaitFor(script_never.clone()),
                Step::Delta("two"),
            ])
        },
        |_| {},
    )
    .await;

    let response = cluster
        .post(WORKERS_AI_ROUTE, r#"{"prompt":"hi","stream":true}"#)
        .await;
    let mut events = response.bytes_stream().eventsource();
    let first = timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.data, r#"{"response":"one"}"#);
    drop(events);

    let record = cluster.fake.record.clone();
    assert!(
        eventually(|| record.dropped.load(Ordering::SeqCst) == 1).await,
        "the fake scheduler saw its stream dropped"
    );
    assert_eq!(record.completed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn non_stream_disconnect_cancels_upstream() {
    let never = Arc::new(Notify::new());
    let script_never = never.clone();
    let cluster = Cluster::start(
        move |_| {
            Script::steps(vec![
                Step::Delta("one"),
                Step::WaitFor(script_never.clone()),
            ])
        },
        |_| {},
    )
    .await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let result = client
        .post(cluster.url(WORKERS_AI_ROUTE))
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await;
    assert!(result.is_err(), "the client gave up before the answer");
    let record = cluster.fake.record.clone();
    assert!(eventually(|| record.dropped.load(Ordering::SeqCst) == 1).await);
}

#[tokio::test]
async fn tool_calls_in_final_event() {
    let call = ToolCall {
        name: "get_weather".to_string(),
        arguments_json: r#"{"city":"Paris"}"#.to_string(),
    };
    let cluster = Cluster::start(
        move |_| {
            Script::steps(vec![
                Step::Delta(r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#),
                Step::Finish(FinishReason::ToolCalls, vec![call.clone()]),
            ])
        },
        |_| {},
    )
    .await;

    let body = r#"{"messages":[{"role":"user","content":"weather in Paris?"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#;
    let (status, json) = cluster.post_json(WORKERS_AI_ROUTE, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["result"]["tool_calls"][0]["name"], "get_weather");
    let sent = cluster.fake.record.last_request();
    let Some(wick_proto::v1::generate_request::Input::Chat(chat)) = sent.input else {
        panic!("expected chat input, got {:?}", sent.input);
    };
    assert_eq!(chat.messages[0].role, "user");
    assert_eq!(chat.messages[0].content, "weather in Paris?");
    assert_eq!(chat.tools[0].name, "get_weather");
    let parameters: Value = serde_json::from_str(&chat.tools[0].parameters_json).unwrap();
    assert_eq!(parameters["properties"]["city"]["type"], "string");
    assert_eq!(
        json["result"]["tool_calls"][0]["arguments"]["city"],
        "Paris"
    );

    let streamed = body.replacen('{', r#"{"stream":true,"#, 1);
    let events = read_events(cluster.post(WORKERS_AI_ROUTE, &streamed).await).await;
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        last["tool_calls"][0]["arguments"],
        serde_json::json!({"city": "Paris"})
    );
}
