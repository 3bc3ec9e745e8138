//! Turning OpenAI-style `/v1/completions` and `/v1/chat/completions`
//! bodies into `GenerateRequest`s, with the same rules as the Workers AI
//! route (see `request.rs`).

use serde_json::{Map, Value};
use wick_proto::v1::generate_request::Input;
use wick_proto::v1::{ChatMessage, GenerateRequest};

use crate::error::ApiError;
use crate::request::{self, Parsed};
use crate::schema::{self, RequestSchema};

/// A parsed OpenAI request and the options that only shape its response.
#[derive(Debug)]
pub struct OpenAiParsed {
    pub parsed: Parsed,
    /// The `model` the client named, echoed when the scheduler names none.
    pub model: String,
    /// `stream_options.include_usage`: send a last chunk with usage.
    pub include_usage: bool,
}

/// Validates and converts a `/v1/completions` body.
///
/// # Errors
/// [`ApiError::InvalidRequest`] naming the JSON path and the rule.
pub fn completion(body: &Value) -> Result<OpenAiParsed, ApiError> {
    schema::validate(RequestSchema::OpenAiCompletion, body)?;
    let fields = object(body)?;
    let prompt = match fields.get("prompt") {
        Some(Value::Array(items)) => items.first().and_then(Value::as_str).unwrap_or_default(),
        Some(value) => value.as_str().unwrap_or_default(),
        None => "",
    };
    let max_tokens = request::max_tokens(fields, "max_tokens")?;
    Ok(build(fields, Input::Prompt(prompt.to_string()), max_tokens))
}

/// Validates and converts a `/v1/chat/completions` body.
///
/// # Errors
/// [`ApiError::InvalidRequest`] naming the JSON path and the rule.
pub fn chat(body: &Value) -> Result<OpenAiParsed, ApiError> {
    schema::validate(RequestSchema::OpenAiChat, body)?;
    let fields = object(body)?;
    let messages = fields
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let messages = messages.iter().map(chat_message).collect();
    let chat = request::chat_input(messages, fields.get("tools"))?;
    // Newer OpenAI clients send max_completion_tokens; it wins when both
    // are present, as it does on OpenAI.
    let max_tokens = match request::max_tokens(fields, "max_completion_tokens")? {
        Some(max_tokens) => Some(max_tokens),
        None => request::max_tokens(fields, "max_tokens")?,
    };
    Ok(build(fields, Input::Chat(chat), max_tokens))
}

fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| ApiError::invalid("", "the body must be a JSON object"))
}

fn build(fields: &Map<String, Value>, input: Input, max_tokens: Option<u32>) -> OpenAiParsed {
    let model = fields
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let include_usage = fields
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let request = GenerateRequest {
        model: model.clone(),
        input: Some(input),
        sampling: Some(request::sampling(fields)),
        max_tokens,
        stop: stop_sequences(fields.get("stop")),
        ..GenerateRequest::default()
    };
    OpenAiParsed {
        parsed: Parsed {
            request,
            stream: request::bool_field(fields, "stream"),
        },
        model,
        include_usage,
    }
}

/// Reads `stop` as a string or an array of strings (the schema checked the
/// count and lengths).
fn stop_sequences(stop: Option<&Value>) -> Vec<String> {
    match stop {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads a chat message whose content is a string, null, or an array of
/// text parts (joined). `developer` is OpenAI's newer name for `system`.
fn chat_message(message: &Value) -> ChatMessage {
    let role = match message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "developer" => "system",
        role => role,
    };
    let content = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    ChatMessage {
        role: role.to_string(),
        content,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_reads_parts_and_options() {
        let body = json!({
            "model": "@cf/microsoft/phi-2",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ],
            "max_tokens": 5, "max_completion_tokens": 9, "stop": "x",
            "stream": true, "stream_options": {"include_usage": true}
        });
        let parsed = chat(&body).unwrap();
        assert!(parsed.include_usage);
        assert!(parsed.parsed.stream);
        let request = parsed.parsed.request;
        assert_eq!(request.max_tokens, Some(9));
        assert_eq!(request.stop, vec!["x".to_string()]);
        let Some(Input::Chat(chat)) = request.input else {
            panic!("expected chat input")
        };
        assert_eq!(chat.messages[0].role, "system");
        assert_eq!(chat.messages[1].content, "ab");
    }

    #[test]
    fn completion_reads_prompt_array() {
        let parsed = completion(&json!({"prompt": ["hello"], "max_tokens": null})).unwrap();
        assert_eq!(
            parsed.parsed.request.input,
            Some(Input::Prompt("hello".to_string()))
        );
        assert_eq!(parsed.parsed.request.max_tokens, None);
    }

    #[test]
    fn empty_messages_are_rejected() {
        let error = chat(&json!({"messages": []})).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("/messages must contain at least 1"),
            "{error}"
        );
    }

    #[test]
    fn negative_penalty_is_rejected() {
        let error = completion(&json!({"prompt": "hi", "presence_penalty": -1})).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("/presence_penalty must be at least 0"),
            "{error}"
        );
    }
}
