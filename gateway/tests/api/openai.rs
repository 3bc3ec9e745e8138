//! OpenAI-compatible shapes, streamed and not, on both route prefixes.

use serde_json::{json, Value};
use wick_proto::v1::generate_request::Input;
use wick_proto::v1::{FinishReason, ToolCall};

use crate::fake::{Script, Step};
use crate::streaming::read_events;
use crate::Cluster;

const CHAT_BODY: &str =
    r#"{"model":"@cf/microsoft/phi-2","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#;

fn chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn chat_completion_shape() {
    let cluster = Cluster::hello().await;
    for path in [
        "/v1/chat/completions",
        "/client/v4/accounts/acct/ai/v1/chat/completions",
    ] {
        let (status, json) = cluster.post_json(path, CHAT_BODY).await;
        assert_eq!(status, 200, "{path}: {json}");
        assert_eq!(json["object"], "chat.completion");
        assert!(json["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(json["created"].as_u64().unwrap() > 0);
        assert_eq!(json["model"], "microsoft/phi-2");
        assert_eq!(json["choices"][0]["index"], 0);
        assert_eq!(json["choices"][0]["message"]["role"], "assistant");
        assert_eq!(json["choices"][0]["message"]["content"], "Hello world");
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            json["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        );
    }
    let sent = cluster.fake.record.last_request();
    assert_eq!(sent.model, "@cf/microsoft/phi-2");
    assert_eq!(sent.max_tokens, Some(8));
    assert!(matches!(sent.input, Some(Input::Chat(_))));
}

#[tokio::test]
async fn chat_stream_chunks() {
    let cluster = Cluster::hello().await;
    let body = CHAT_BODY.replacen(
        '{',
        r#"{"stream":true,"stream_options":{"include_usage":true},"#,
        1,
    );
    let response = cluster.post("/v1/chat/completions", &body).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunks = chunks(&read_events(response).await);
    assert_eq!(chunks.len(), 4, "{chunks:?}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "Hello"})
    );
    assert_eq!(chunks[0]["usage"], Value::Null);
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({"content": " world"})
    );
    assert_eq!(chunks[2]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["choices"], json!([]));
    assert_eq!(chunks[3]["usage"]["total_tokens"], 7);
}

#[tokio::test]
async fn completion_shapes() {
    let cluster = Cluster::start(
        |_| {
            Script::steps(vec![
                Step::Delta("abc"),
                Step::Finish(FinishReason::Length, Vec::new()),
            ])
        },
        |_| {},
    )
    .await;
    let body =
        r#"{"model":"@cf/microsoft/phi-2","prompt":"hi","max_tokens":1,"stop":["\n"],"seed":3}"#;
    let (status, json) = cluster.post_json("/v1/completions", body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["object"], "text_completion");
    assert!(json["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(json["choices"][0]["text"], "abc");
    assert_eq!(json["choices"][0]["finish_reason"], "length");
    assert_eq!(json["usage"]["completion_tokens"], 1);
    let sent = cluster.fake.record.last_request();
    assert_eq!(sent.stop, vec!["\n".to_string()]);
    assert_eq!(sent.sampling.unwrap().seed, Some(3));

    let streamed = body.replacen('{', r#"{"stream":true,"#, 1);
    let chunks = chunks(&read_events(cluster.post("/v1/completions", &streamed).await).await);
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["text"], "abc");
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "length");
    assert!(
        chunks[1].get("usage").is_none(),
        "usage only when asked for"
    );
}

#[tokio::test]
async fn chat_tool_calls_shape() {
    let cluster = Cluster::start(
        |_| {
            let call = ToolCall {
                name: "get_weather".to_string(),
                arguments_json: r#"{"city":"Paris"}"#.to_string(),
            };
            Script::steps(vec![Step::Finish(FinishReason::ToolCalls, vec![call])])
        },
        |_| {},
    )
    .await;
    let body = r#"{"messages":[{"role":"user","content":"weather?"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#;
    let (status, json) = cluster.post_json("/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{json}");
    let call = &json["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(json["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert!(call["id"].as_str().unwrap().starts_with("call_"));

    let streamed = body.replacen('{', r#"{"stream":true,"#, 1);
    let chunks = chunks(&read_events(cluster.post("/v1/chat/completions", &streamed).await).await);
    let delta = &chunks.last().unwrap()["choices"][0]["delta"];
    assert_eq!(delta["role"], "assistant");
    assert_eq!(delta["tool_calls"][0]["index"], 0);
    assert_eq!(delta["tool_calls"][0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn openai_errors_use_openai_shape() {
    let cluster = Cluster::hello().await;
    let cases = [
        (r#"{"messages":[]}"#, "messages"),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":7}"#,
            "temperature",
        ),
        (
            r#"{"messages":[{"role":"robot","content":"hi"}]}"#,
            "messages.0.role",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"n":2}"#,
            "n",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":0}"#,
            "max_completion_tokens",
        ),
    ];
    for (body, param) in cases {
        for streamed in [false, true] {
            let body = if streamed {
                body.replacen('{', r#"{"stream":true,"#, 1)
            } else {
                body.to_string()
            };
            let (status, json) = cluster.post_json("/v1/chat/completions", &body).await;
            assert_eq!(status, 400, "{body}: {json}");
            assert_eq!(json["error"]["type"], "invalid_request_error", "{body}");
            assert_eq!(json["error"]["param"], param, "{body}: {json}");
            assert!(json["error"]["message"]
                .as_str()
                .unwrap()
                .contains(param.split('.').next().unwrap()));
        }
    }
    let (status, json) = cluster
        .post_json("/v1/completions", r#"{"prompt":""}"#)
        .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["param"], "prompt");
    assert_eq!(cluster.fake.record.request_count(), 0);
}

#[tokio::test]
async fn unknown_model_status_by_route() {
    let cluster = Cluster::start(
        |_| Script::reject(tonic::Status::not_found("no worker serves nope")),
        |_| {},
    )
    .await;
    let (status, json) = cluster
        .post_json(
            "/v1/chat/completions",
            &CHAT_BODY.replace("@cf/microsoft/phi-2", "nope"),
        )
        .await;
    assert_eq!(status, 404, "{json}");
    assert_eq!(json["error"]["code"], "model_not_found");
    let (status, json) = cluster
        .post_json("/ai/run/nope", r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["errors"][0]["code"], 5007);
    assert!(json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));
}

#[tokio::test]
async fn models_lists_ids_and_aliases() {
    let cluster = Cluster::hello().await;
    let response = cluster
        .client
        .get(cluster.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["object"], "list");
    let ids: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["microsoft/phi-2", "@cf/microsoft/phi-2"]);
    assert_eq!(json["data"][0]["object"], "model");
}

#[tokio::test]
async fn openai_error_mid_stream() {
    let cluster = Cluster::start(
        |_| {
            Script::steps(vec![
                Step::Delta("partial"),
                Step::ErrorEvent(wick_proto::v1::error::Code::Internal, "sampler failed"),
            ])
        },
        |_| {},
    )
    .await;
    let body = CHAT_BODY.replacen('{', r#"{"stream":true,"#, 1);
    let events = read_events(cluster.post("/v1/chat/completions", &body).await).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sampler failed"));
    assert_eq!(events[2], "[DONE]");
}
