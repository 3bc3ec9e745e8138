//! Turning a schema-valid body into a `GenerateRequest`, with the rules the
//! schema leaves open (documented in `gateway/README.md`):
//!
//! - `max_tokens` must be at least 1 and fit in 32 bits. The scheduler
//!   checks that it fits the context beside the prompt (400 either way).
//! - `repetition_penalty` 0 means disabled and is sent as 1.
//! - `messages: []` is rejected, and so is a body with both `prompt` and
//!   `messages`, even when one of them fails its own branch of the schema.
//!
//! The Workers AI and OpenAI routes share the helpers here, so the rules
//! are the same on every route, streamed or not.

use serde_json::{Map, Value};
use wick_proto::v1::{
    generate_request::Input, ChatInput, ChatMessage, GenerateRequest, SamplingParams, Tool,
};

use crate::error::ApiError;
use crate::schema::{self, RequestSchema};

/// A request ready for the scheduler, and whether the client wants the
/// response streamed.
#[derive(Debug)]
pub struct Parsed {
    pub request: GenerateRequest,
    pub stream: bool,
}

/// Validates and converts the body of `POST /ai/run/{model}`.
///
/// # Errors
/// [`ApiError::InvalidRequest`] naming the JSON path and the rule.
pub fn workers_ai(model: &str, body: &Value) -> Result<Parsed, ApiError> {
    schema::validate(RequestSchema::WorkersAi, body)?;
    let Some(fields) = body.as_object() else {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    };

    let input = if let Some(prompt) = fields.get("prompt") {
        if fields.contains_key("messages") {
            return Err(ApiError::invalid(
                "",
                "the body must contain either prompt or messages, not both",
            ));
        }
        Input::Prompt(prompt.as_str().unwrap_or_default().to_string())
    } else {
        let messages = fields
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let messages = messages.iter().map(plain_message).collect();
        Input::Chat(chat_input(messages, fields.get("tools"))?)
    };

    let request = GenerateRequest {
        model: model.to_string(),
        input: Some(input),
        raw: bool_field(fields, "raw"),
        lora: fields
            .get("lora")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        sampling: Some(sampling(fields)),
        max_tokens: max_tokens(fields, "max_tokens")?,
        ..GenerateRequest::default()
    };
    Ok(Parsed {
        request,
        stream: bool_field(fields, "stream"),
    })
}

/// Reads a boolean field; absent or null is false.
pub fn bool_field(fields: &Map<String, Value>, name: &str) -> bool {
    fields.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// Reads the sampling parameters of a schema-valid body. Absent and null
/// fields stay unset, so the scheduler applies its defaults.
pub fn sampling(fields: &Map<String, Value>) -> SamplingParams {
    let float = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_f64)
            .map(|value| value as f32)
    };
    let integer = |name: &str| fields.get(name).and_then(whole_number);
    SamplingParams {
        temperature: float("temperature"),
        top_p: float("top_p"),
        // The schema bounds both, so the conversions cannot truncate.
        top_k: integer("top_k").map(|value| value as u32),
        seed: integer("seed").map(|value| value as u64),
        repetition_penalty: float("repetition_penalty")
            .map(|value| if value == 0.0 { 1.0 } else { value }),
        frequency_penalty: float("frequency_penalty"),
        presence_penalty: float("presence_penalty"),
    }
}

/// Reads the token budget from field `name`. Absent or null leaves it unset
/// (the scheduler's default of 256).
///
/// # Errors
/// [`ApiError::InvalidRequest`] when the value is below 1 or above what a
/// 32-bit count holds.
pub fn max_tokens(fields: &Map<String, Value>, name: &str) -> Result<Option<u32>, ApiError> {
    let Some(value) = fields.get(name).filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let pointer = format!("/{name}");
    let Some(number) = whole_number(value) else {
        return Err(ApiError::invalid(
            &pointer,
            format!("{pointer} must be an integer"),
        ));
    };
    if number < 1 {
        return Err(ApiError::invalid(
            &pointer,
            format!("{pointer} must be at least 1, got {number}"),
        ));
    }
    u32::try_from(number).map(Some).map_err(|_| {
        ApiError::invalid(
            &pointer,
            format!(
                "{pointer} must be at most {}, got {number}; the prompt plus {name} must also fit the model's context",
                u32::MAX
            ),
        )
    })
}

/// Reads a JSON integer, including a float with no fraction such as `42.0`
/// (JSON Schema counts it as an integer). Returns `None` for anything else.
fn whole_number(value: &Value) -> Option<i128> {
    if let Some(number) = value.as_i64() {
        return Some(number.into());
    }
    if let Some(number) = value.as_u64() {
        return Some(number.into());
    }
    let number = value.as_f64()?;
    // 1e30 is far past every limit, and keeps the cast from saturating.
    (number.fract() == 0.0 && number.abs() < 1e30).then_some(number as i128)
}

/// Reads a Workers AI message, `{role, content}`, both strings per the schema.
fn plain_message(message: &Value) -> ChatMessage {
    let text = |name: &str| {
        message
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    ChatMessage {
        role: text("role"),
        content: text("content"),
    }
}

/// Builds the chat input from messages and the optional `tools` array.
///
/// # Errors
/// [`ApiError::InvalidRequest`] for an empty conversation or a tool
/// without a name.
pub fn chat_input(
    messages: Vec<ChatMessage>,
    tools: Option<&Value>,
) -> Result<ChatInput, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "/messages",
            "/messages must contain at least 1 message: there is nothing to reply to",
        ));
    }
    let tools = tools.and_then(Value::as_array).cloned().unwrap_or_default();
    let tools = tools
        .iter()
        .enumerate()
        .map(|(index, tool)| tool_from(index, tool))
        .collect::<Result<_, _>>()?;
    Ok(ChatInput { messages, tools })
}

/// Reads a tool in the OpenAI form `{type, function: {name, description,
/// parameters}}` or the flat form `{name, description, parameters}` that
/// Workers AI also accepts.
fn tool_from(index: usize, tool: &Value) -> Result<Tool, ApiError> {
    let (function, pointer) = match tool.get("function") {
        Some(function) => (function, format!("/tools/{index}/function")),
        None => (tool, format!("/tools/{index}")),
    };
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        let pointer = format!("{pointer}/name");
        return Err(ApiError::invalid(
            &pointer,
            format!("{pointer} is required and must not be empty"),
        ));
    }
    let parameters = match function.get("parameters") {
        Some(Value::Object(parameters)) => Value::Object(parameters.clone()).to_string(),
        Some(Value::Null) | None => String::new(),
        Some(_) => {
            let pointer = format!("{pointer}/parameters");
            return Err(ApiError::invalid(
                &pointer,
                format!("{pointer} must be an object"),
            ));
        }
    };
    Ok(Tool {
        name: name.to_string(),
        description: function
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        parameters_json: parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<Parsed, ApiError> {
        workers_ai("@cf/microsoft/phi-2", &body)
    }

    #[test]
    fn prompt_request_keeps_every_field() {
        let parsed = parse(json!({
            "prompt": "hi", "raw": true, "stream": true, "max_tokens": 7, "temperature": 0.5,
            "top_p": 0.9, "top_k": 5, "seed": 9999999999u64, "repetition_penalty": 1.1,
            "frequency_penalty": 0.2, "presence_penalty": 0.3, "lora": "adapter"
        }))
        .unwrap();
        let request = parsed.request;
        assert!(parsed.stream);
        assert!(request.raw);
        assert_eq!(request.lora, "adapter");
        assert_eq!(request.max_tokens, Some(7));
        assert_eq!(request.input, Some(Input::Prompt("hi".to_string())));
        let sampling = request.sampling.unwrap();
        assert_eq!(sampling.seed, Some(9_999_999_999));
        assert_eq!(sampling.top_k, Some(5));
        assert_eq!(sampling.temperature, Some(0.5));
    }

    #[test]
    fn repetition_penalty_zero_means_disabled() {
        let parsed = parse(json!({"prompt": "hi", "repetition_penalty": 0})).unwrap();
        assert_eq!(
            parsed.request.sampling.unwrap().repetition_penalty,
            Some(1.0)
        );
    }

    #[test]
    fn max_tokens_bounds() {
        for (value, ok) in [
            (json!(1), true),
            (json!(0), false),
            (json!(-1), false),
            (json!(4294967296u64), false),
        ] {
            let result = parse(json!({"prompt": "hi", "max_tokens": value}));
            assert_eq!(result.is_ok(), ok, "max_tokens {value}");
        }
    }

    #[test]
    fn whole_float_seed_is_an_integer() {
        let parsed = parse(json!({"prompt": "hi", "seed": 42.0})).unwrap();
        assert_eq!(parsed.request.sampling.unwrap().seed, Some(42));
    }

    #[test]
    fn both_inputs_are_rejected_even_with_bad_messages() {
        let error = parse(json!({"prompt": "hi", "messages": [{"role": "user"}]})).unwrap_err();
        assert!(error.to_string().contains("not both"), "{error}");
    }

    #[test]
    fn tools_travel_as_structured_fields() {
        let parsed = parse(json!({
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "d",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"name": "flat_tool"}
            ]
        }))
        .unwrap();
        let Some(Input::Chat(chat)) = parsed.request.input else {
            panic!("expected chat input")
        };
        assert_eq!(chat.tools[0].name, "get_weather");
        assert!(chat.tools[0].parameters_json.contains("\"city\""));
        assert_eq!(chat.tools[1].name, "flat_tool");
        assert_eq!(chat.tools[1].parameters_json, "");
    }

    #[test]
    fn tool_without_name_is_rejected() {
        let error = parse(json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}))
            .unwrap_err();
        assert!(
            error.to_string().starts_with("/tools/0/name is required"),
            "{error}"
        );
    }
}
