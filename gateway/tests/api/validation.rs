//! Every rejected body gets the same status, code and path-naming message
//! with and without `stream`, before any SSE header, and nothing reaches
//! the scheduler.

use serde_json::Value;

use crate::{Cluster, WORKERS_AI_ROUTE};

/// A body that must be rejected, the expected status and code, and a piece
/// of the expected message (usually the JSON path).
struct Case {
    body: String,
    status: u16,
    code: u64,
    message: &'static str,
}

fn case(body: impl Into<String>, status: u16, code: u64, message: &'static str) -> Case {
    Case {
        body: body.into(),
        status,
        code,
        message,
    }
}

fn rejected_cases() -> Vec<Case> {
    let mut cases = vec![
        case(
            r#"{"prompt":"hi","stream":"false"}"#,
            400,
            5006,
            "/stream must be a boolean",
        ),
        case(
            r#"{"prompt":"hi","max_tokens":"256"}"#,
            400,
            5006,
            "/max_tokens must be an integer",
        ),
        case(
            r#"{"prompt":"hi","temperature":"0.5"}"#,
            400,
            5006,
            "/temperature must be a number",
        ),
        case(
            r#"{"prompt":"hi","seed":"42"}"#,
            400,
            5006,
            "/seed must be an integer",
        ),
        case(
            r#"{"prompt":"hi","raw":1}"#,
            400,
            5006,
            "/raw must be a boolean",
        ),
        case(r#"{"prompt":123}"#, 400, 5006, "/prompt must be a string"),
        case(
            r#"{"prompt":"hi","temperature":1e400}"#,
            400,
            5006,
            "number out of range",
        ),
        case(
            r#"{"prompt":"hi","temperature":NaN}"#,
            400,
            5006,
            "malformed JSON body: expected value at line 1 column",
        ),
        case(
            r#"{"prompt":""}"#,
            400,
            5006,
            "/prompt must be at least 1 character long",
        ),
        case(
            r#"{"prompt":"hi","temperature":9}"#,
            400,
            5006,
            "/temperature must be at most 5",
        ),
        case(
            r#"{"prompt":"hi","temperature":-0.1}"#,
            400,
            5006,
            "/temperature must be at least 0",
        ),
        case(
            r#"{"prompt":"hi","top_k":0}"#,
            400,
            5006,
            "/top_k must be at least 1",
        ),
        case(
            r#"{"prompt":"hi","top_k":51}"#,
            400,
            5006,
            "/top_k must be at most 50",
        ),
        case(
            r#"{"prompt":"hi","top_k":5.5}"#,
            400,
            5006,
            "/top_k must be an integer",
        ),
        case(
            r#"{"prompt":"hi","top_p":2.5}"#,
            400,
            5006,
            "/top_p must be at most 2",
        ),
        case(
            r#"{"prompt":"hi","top_p":-1}"#,
            400,
            5006,
            "/top_p must be at least 0",
        ),
        case(
            r#"{"prompt":"hi","seed":0}"#,
            400,
            5006,
            "/seed must be at least 1",
        ),
        case(
            r#"{"prompt":"hi","seed":-1}"#,
            400,
            5006,
            "/seed must be at least 1",
        ),
        case(
            r#"{"prompt":"hi","seed":42.5}"#,
            400,
            5006,
            "/seed must be an integer",
        ),
        case(
            r#"{"prompt":"hi","seed":10000000000}"#,
            400,
            5006,
            "/seed must be at most 9999999999",
        ),
        case(
            r#"{"prompt":"hi","seed":18446744073709551616}"#,
            400,
            5006,
            "/seed must be at most 9999999999",
        ),
        case(
            r#"{"prompt":"hi","max_tokens":0}"#,
            400,
            5006,
            "/max_tokens must be at least 1",
        ),
        case(
            r#"{"prompt":"hi","max_tokens":-1}"#,
            400,
            5006,
            "/max_tokens must be at least 1",
        ),
        case(
            r#"{"prompt":"hi","max_tokens":9007199254740993}"#,
            400,
            5006,
            "/max_tokens must be at most 4294967295",
        ),
        case(
            r#"{"prompt":"hi","max_tokens":1.5}"#,
            400,
            5006,
            "/max_tokens must be an integer",
        ),
        case(
            r#"{"prompt":"hi","messages":[{"role":"user","content":"hi"}]}"#,
            400,
            5006,
            "not both",
        ),
        case(
            r#"{"prompt":"hi","messages":[{"role":"user"}]}"#,
            400,
            5006,
            "not both",
        ),
        case("{}", 400, 5006, "must contain one of: prompt, messages"),
        case("[]", 400, 5006, "the body must be an object"),
        case(
            r#"{"messages":[]}"#,
            400,
            5006,
            "/messages must contain at least 1 message",
        ),
        case(
            r#"{"messages":[{"role":"user"}]}"#,
            400,
            5006,
            "/messages/0/content is required",
        ),
        case(
            r#"{"messages":[{"content":"hi"}]}"#,
            400,
            5006,
            "/messages/0/role is required",
        ),
        case(
            r#"{"messages":"hi"}"#,
            400,
            5006,
            "/messages must be an array",
        ),
        case(
            r#"{"messages":["hi"]}"#,
            400,
            5006,
            "/messages/0 must be an object",
        ),
        case(
            r#"{"messages":[{"role":"user","content":5}]}"#,
            400,
            5006,
            "/messages/0/content must be a string",
        ),
        case(
            r#"{"messages":[{"role":"user","content":"x"}],"tools":{}}"#,
            400,
            5006,
            "/tools must be an array",
        ),
        case(
            r#"{"prompt":"hi","lora":5}"#,
            400,
            5006,
            "/lora must be a string",
        ),
        case(
            r#"{"prompt":"hi","frequency_penalty":2.01}"#,
            400,
            5006,
            "/frequency_penalty must be at most 2",
        ),
        case(
            r#"{"prompt":"hi","presence_penalty":-0.5}"#,
            400,
            5006,
            "/presence_penalty must be at least 0",
        ),
        case(
            r#"{"prompt":"hi","repetition_penalty":3}"#,
            400,
            5006,
            "/repetition_penalty must be at most 2",
        ),
        case(
            r#"{"prompt":"hi""#,
            400,
            5006,
            "malformed JSON body: EOF while parsing",
        ),
        case("", 400, 5006, "the request body is empty"),
        case(
            r#"{"prompt":"hi","lora":"my-adapter"}"#,
            405,
            5005,
            "LoRA adapter \"my-adapter\"",
        ),
    ];
    let long_prompt = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(6145));
    cases.push(case(
        long_prompt,
        400,
        5006,
        "/prompt must be at most 6144 characters long, got 6145",
    ));
    let long_content = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "é".repeat(6145)
    );
    cases.push(case(
        long_content,
        400,
        5006,
        "/messages/0/content must be at most 6144 characters",
    ));
    cases
}

/// Adds `"stream": true` to a body given as text, which works for bodies
/// that are not valid JSON too.
fn with_stream(body: &str) -> Option<String> {
    if body.contains("\"stream\"") || !body.starts_with('{') {
        return None;
    }
    let rest = &body[1..];
    let separator = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    Some(format!("{{\"stream\":true{separator}{rest}"))
}

async fn assert_rejected(cluster: &Cluster, body: &str, expected: &Case) {
    let response = cluster.post(WORKERS_AI_ROUTE, body).await;
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let text = response.text().await.unwrap();
    let short_body: String = body.chars().take(80).collect();
    assert_eq!(status, expected.status, "status for {short_body}: {text}");
    assert_eq!(
        content_type, "application/json",
        "content type for {short_body}"
    );
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["success"], false, "success for {short_body}");
    assert_eq!(json["result"], Value::Null, "result for {short_body}");
    assert_eq!(
        json["errors"][0]["code"], expected.code,
        "code for {short_body}: {text}"
    );
    let message = json["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(expected.message),
        "message for {short_body}: {message:?}"
    );
    assert!(
        message.len() < 400,
        "message for {short_body} is short: {message:?}"
    );
}

#[tokio::test]
async fn invalid_bodies_rejected_in_both_modes() {
    let cluster = Cluster::hello().await;
    for case in rejected_cases() {
        assert_rejected(&cluster, &case.body, &case).await;
        if let Some(streamed) = with_stream(&case.body) {
            assert_rejected(&cluster, &streamed, &case).await;
        }
    }
    assert_eq!(
        cluster.fake.record.request_count(),
        0,
        "nothing invalid reaches the scheduler"
    );

    let (status, json) = cluster
        .post_json(WORKERS_AI_ROUTE, r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(status, 200, "a valid request still succeeds: {json}");
}

#[tokio::test]
async fn accepted_bodies_reach_scheduler() {
    let cluster = Cluster::hello().await;
    let accepted = [
        r#"{"prompt":"hi","seed":9999999999}"#,
        r#"{"prompt":"hi","seed":1}"#,
        r#"{"prompt":"hi","max_tokens":1}"#,
        r#"{"prompt":"hi","repetition_penalty":0}"#,
        r#"{"prompt":"hi","unknown_field":true}"#,
        r#"{"prompt":"hi","temperature":0,"top_p":0,"top_k":1}"#,
        r#"{"prompt":"hi","temperature":5,"top_p":2,"top_k":50,"frequency_penalty":2,"presence_penalty":2}"#,
        r#"{"prompt":"hi","lora":"served-adapter"}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"raw":1}"#,
    ];
    for body in accepted {
        let (status, json) = cluster.post_json(WORKERS_AI_ROUTE, body).await;
        assert_eq!(status, 200, "{body}: {json}");
        assert_eq!(json["result"]["response"], "Hello world", "{body}");
    }
    assert_eq!(cluster.fake.record.request_count(), accepted.len());
}

#[tokio::test]
async fn cjk_prompt_counts_characters() {
    let cluster = Cluster::hello().await;
    let prompt = "字".repeat(6144);
    assert_eq!(prompt.len(), 18432);
    let body = serde_json::json!({ "prompt": prompt }).to_string();
    let (status, _) = cluster.post_json(WORKERS_AI_ROUTE, &body).await;
    assert_eq!(status, 200);
    let sent = cluster.fake.record.last_request();
    assert_eq!(
        sent.input,
        Some(wick_proto::v1::generate_request::Input::Prompt(prompt))
    );
}

#[tokio::test]
async fn spelled_out_defaults_match_omitted() {
    let cluster = Cluster::hello().await;
    let short = r#"{"prompt":"My name is Alex and I"}"#;
    let spelled =
        r#"{"prompt":"My name is Alex and I","max_tokens":256,"stream":false,"raw":false}"#;
    let (first_status, first) = cluster.post_json(WORKERS_AI_ROUTE, short).await;
    let short_request = cluster.fake.record.last_request();
    let (second_status, second) = cluster.post_json(WORKERS_AI_ROUTE, spelled).await;
    let spelled_request = cluster.fake.record.last_request();
    assert_eq!((first_status, second_status), (200, 200));
    assert_eq!(first, second);
    assert_eq!(short_request.input, spelled_request.input);
    assert_eq!(short_request.raw, spelled_request.raw);
    assert_eq!(short_request.sampling, spelled_request.sampling);
    assert_eq!(spelled_request.max_tokens, Some(256));
}

#[tokio::test]
async fn sampling_values_sent_unchanged() {
    let cluster = Cluster::hello().await;
    let body = r#"{"prompt":"hi","seed":9999999999,"temperature":0.0001,"top_p":0.5,"top_k":50,"repetition_penalty":0,"max_tokens":7}"#;
    let (status, _) = cluster.post_json(WORKERS_AI_ROUTE, body).await;
    assert_eq!(status, 200);
    let sent = cluster.fake.record.last_request();
    let sampling = sent.sampling.unwrap();
    assert_eq!(sent.model, "@cf/microsoft/phi-2");
    assert_eq!(sent.max_tokens, Some(7));
    assert_eq!(sampling.seed, Some(9_999_999_999));
    assert_eq!(sampling.temperature, Some(0.0001));
    assert_eq!(sampling.top_k, Some(50));
    assert_eq!(sampling.repetition_penalty, Some(1.0), "0 means disabled");
    assert!(!sent.request_id.is_empty());
}

#[tokio::test]
async fn short_route_keeps_model_slashes() {
    let cluster = Cluster::hello().await;
    let response = cluster
        .client
        .post(cluster.url("/ai/run/@cf/microsoft/phi-2"))
        .header("x-request-id", "client-id-42")
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-id-42");
    let sent = cluster.fake.record.last_request();
    assert_eq!(sent.model, "@cf/microsoft/phi-2");
    assert_eq!(sent.request_id, "client-id-42");
}
