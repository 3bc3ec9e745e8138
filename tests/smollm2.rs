//! End-to-end on a real trained model: `wick serve` with SmolLM2-135M
//! (GGUF, cached by `scripts/fetch-smollm2`), used only through HTTP. The
//! tests skip with a note when the file is missing, and fail instead when
//! `WICK_REQUIRE_SMOLLM2=1`.

mod common;
#[path = "../worker/tests/smollm2/mod.rs"]
mod smollm2;

use std::path::Path;

use common::{read_sse, start_serve, WickProcess};
use serde_json::{json, Value};

/// The model id a GGUF worker reports: the file name without `.gguf`.
const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";
const REPLACEMENT_CHARACTER: char = '\u{FFFD}';

/// A one-process cluster (`wick serve`) on free loopback ports.
struct Serve {
    http: std::net::SocketAddr,
    _process: WickProcess,
}

impl Serve {
    async fn start(model: &Path) -> Serve {
        let model = model.to_str().expect("a UTF-8 model path");
        let (process, http) = start_serve(model, &["--kv-cache-tokens", "4096"]).await;
        Serve {
            http,
            _process: process,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(response.status(), 200, "POST {path} {body}");
        response
    }

    /// Sends `body` to the Workers AI route twice and returns the response
    /// text of the JSON reply and of the stream.
    async fn both_ways(&self, body: Value) -> (String, String) {
        let path = format!("/ai/run/{MODEL}");
        let whole: Value = self
            .post(&path, &body)
            .await
            .json()
            .await
            .expect("a JSON body");
        let whole = whole["result"]["response"]
            .as_str()
            .expect("a response string")
            .to_string();
        let mut streaming = body;
        streaming["stream"] = json!(true);
        let streamed = read_sse(self.post(&path, &streaming).await).await;
        assert!(streamed.done, "the stream ends with [DONE]");
        (whole, streamed.text)
    }
}

/// Builds a greedy chat request with an explicit system message. With the
/// default one that the template adds, greedy decoding of this Q4_1 file
/// answers the France question in broken French.
fn chat(user: &str, max_tokens: u32) -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": user},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn smollm2_serves_real_text() {
    let Some(model) = smollm2::smollm2_path("smollm2_serves_real_text") else {
        return;
    };
    let serve = Serve::start(&model).await;

    let (whole, streamed) = serve
        .both_ways(chat("What is the capital of France?", 48))
        .await;
    assert!(whole.contains("Paris"), "the answer names Paris: {whole:?}");
    assert_eq!(streamed, whole, "streamed text equals the JSON text");
    for marker in ["<|im_end|>", "<|im_start|>"] {
        assert!(!whole.contains(marker), "{marker} is not sent: {whole:?}");
    }

    // The OpenAI route reports why generation ended: "stop" means the
    // model's end-of-sequence token <|im_end|>, not the token limit.
    let mut openai = chat("What is the capital of France?", 48);
    openai["model"] = json!(MODEL);
    let reply: Value = serve
        .post("/v1/chat/completions", &openai)
        .await
        .json()
        .await
        .expect("a JSON body");
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "stop", "{reply}");
    let content = choice["message"]["content"].as_str().expect("content");
    assert_eq!(content, whole, "both APIs return the same greedy text");
}

/// Checks that `whole` and `streamed` are the same text with no U+FFFD
/// (a character cut between two tokens and decoded alone) and at least
/// one character that `wanted` accepts.
fn assert_clean_text(whole: &str, streamed: &str, wanted: fn(char) -> bool, what: &str) {
    assert!(
        !whole.contains(REPLACEMENT_CHARACTER),
        "no U+FFFD in the JSON text: {whole:?}"
    );
    assert!(
        !streamed.contains(REPLACEMENT_CHARACTER),
        "no U+FFFD in the streamed text: {streamed:?}"
    );
    assert_eq!(streamed, whole, "streamed text equals the JSON text");
    assert!(
        whole.chars().any(wanted),
        "the answer contains {what}: {whole:?}"
    );
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30FF}' | '\u{4E00}'..='\u{9FFF}')
}

fn is_emoji(c: char) -> bool {
    matches!(c, '\u{1F300}'..='\u{1FAFF}')
}

#[tokio::test(flavor = "multi_thread")]
async fn smollm2_round_trips_cjk_and_emoji() {
    let Some(model) = smollm2::smollm2_path("smollm2_round_trips_cjk_and_emoji") else {
        return;
    };
    let serve = Serve::start(&model).await;

    // A raw Japanese prompt with an emoji: SmolLM2 continues in Japanese.
    let raw = json!({
        "prompt": "東京は日本の首都です。🚀 東京",
        "raw": true,
        "max_tokens": 24,
        "temperature": 0,
    });
    let (whole, streamed) = serve.both_ways(raw).await;
    assert_clean_text(&whole, &streamed, is_cjk, "kana or CJK ideographs");

    let emoji = chat(
        "Reply with three emoji that describe a rocket launch 🚀.",
        24,
    );
    let (whole, streamed) = serve.both_ways(emoji).await;
    assert_clean_text(&whole, &streamed, is_emoji, "an emoji");
}
