//! Range checks of a `GenerateRequest` and the resolution of its sampling
//! defaults. The ranges are those documented in `generation.proto`.

use std::hash::{BuildHasher, Hasher};

use wick_proto::v1 as pb;

use crate::error::RequestError;

const MAX_PROMPT_CHARS: usize = 6144;
const MAX_STOPS: usize = 4;
const MAX_STOP_CHARS: usize = 256;
const MAX_SEED: u64 = 9_999_999_999;
const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

fn invalid(message: String) -> RequestError {
    RequestError::Invalid(message)
}

/// Checks every field that does not need the model. Errors with
/// [`RequestError::Invalid`] naming the first field that breaks its rule.
pub fn check_fields(request: &pb::GenerateRequest) -> Result<(), RequestError> {
    match &request.input {
        None => return Err(invalid("one of prompt or chat is required".into())),
        Some(pb::generate_request::Input::Prompt(prompt)) => {
            let chars = prompt.chars().count();
            if !(1..=MAX_PROMPT_CHARS).contains(&chars) {
                return Err(invalid(format!(
                    "prompt is {chars} characters; it must be 1 to {MAX_PROMPT_CHARS}"
                )));
            }
        }
        Some(pb::generate_request::Input::Chat(chat)) => check_chat(chat)?,
    }
    if request.max_tokens == Some(0) {
        return Err(invalid("max_tokens is 0; it must be at least 1".into()));
    }
    if request.stop.len() > MAX_STOPS {
        return Err(invalid(format!(
            "stop has {} strings; at most {MAX_STOPS} are allowed",
            request.stop.len()
        )));
    }
    for (index, stop) in request.stop.iter().enumerate() {
        let chars = stop.chars().count();
        if !(1..=MAX_STOP_CHARS).contains(&chars) {
            return Err(invalid(format!(
                "stop[{index}] is {chars} characters; it must be 1 to {MAX_STOP_CHARS}"
            )));
        }
    }
    if let Some(sampling) = &request.sampling {
        check_sampling(sampling)?;
    }
    Ok(())
}

fn check_chat(chat: &pb::ChatInput) -> Result<(), RequestError> {
    if chat.messages.is_empty() {
        return Err(invalid(
            "chat.messages is empty; at least one message is required".into(),
        ));
    }
    for (index, message) in chat.messages.iter().enumerate() {
        if !ROLES.contains(&message.role.as_str()) {
            return Err(invalid(format!(
                "chat.messages[{index}].role is {:?}; it must be one of {ROLES:?}",
                message.role
            )));
        }
        let chars = message.content.chars().count();
        if chars > MAX_PROMPT_CHARS {
            return Err(invalid(format!(
                "chat.messages[{index}].content is {chars} characters; at most {MAX_PROMPT_CHARS} are allowed"
            )));
        }
    }
    for (index, tool) in chat.tools.iter().enumerate() {
        if tool.name.trim().is_empty() {
            return Err(invalid(format!("chat.tools[{index}].name is empty")));
        }
        if !tool.parameters_json.is_empty() {
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(&tool.parameters_json);
            if !matches!(parsed, Ok(serde_json::Value::Object(_))) {
                return Err(invalid(format!(
                    "chat.tools[{index}].parameters_json is not a JSON object"
                )));
            }
        }
    }
    Ok(())
}

fn check_range(field: &str, value: Option<f32>, min: f32, max: f32) -> Result<(), RequestError> {
    match value {
        // `contains` is false for NaN, so NaN is rejected too.
        Some(v) if !(min..=max).contains(&v) => Err(invalid(format!(
            "sampling.{field} is {v}; it must be {min} to {max}"
        ))),
        _ => Ok(()),
    }
}

fn check_sampling(s: &pb::SamplingParams) -> Result<(), RequestError> {
    check_range("temperature", s.temperature, 0.0, 5.0)?;
    check_range("top_p", s.top_p, 0.0, 2.0)?;
    check_range("repetition_penalty", s.repetition_penalty, 0.0, 2.0)?;
    check_range("frequency_penalty", s.frequency_penalty, 0.0, 2.0)?;
    check_range("presence_penalty", s.presence_penalty, 0.0, 2.0)?;
    if let Some(top_k) = s.top_k {
        if !(1..=50).contains(&top_k) {
            return Err(invalid(format!(
                "sampling.top_k is {top_k}; it must be 1 to 50"
            )));
        }
    }
    if let Some(seed) = s.seed {
        if !(1..=MAX_SEED).contains(&seed) {
            return Err(invalid(format!(
                "sampling.seed is {seed}; it must be 1 to {MAX_SEED}"
            )));
        }
    }
    Ok(())
}

/// Fills in the defaults of unset sampling fields. Without a seed, a
/// random one is drawn here, once per request, so that a sequence
/// recomputed after preemption samples the same tokens again.
pub fn resolve_sampling(
    sampling: Option<&pb::SamplingParams>,
    default_temperature: f32,
) -> pb::SequenceSampling {
    let s = sampling.cloned().unwrap_or_default();
    pb::SequenceSampling {
        temperature: s.temperature.unwrap_or(default_temperature),
        top_p: s.top_p.unwrap_or(1.0),
        top_k: s.top_k.unwrap_or(0),
        repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        seed: s.seed.unwrap_or_else(random_seed),
    }
}

/// Draws a seed in 1..=9999999999 from the standard library's randomly
/// keyed hasher, which is enough for sampling and needs no extra crate.
fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    1 + hasher.finish() % MAX_SEED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt_request(prompt: &str) -> pb::GenerateRequest {
        pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Prompt(prompt.into())),
            ..Default::default()
        }
    }

    fn message(request: &pb::GenerateRequest) -> String {
        check_fields(request).unwrap_err().to_string()
    }

    #[test]
    fn prompt_length_is_checked() {
        assert!(message(&prompt_request("")).contains("prompt is 0 characters"));
        let long = "é".repeat(MAX_PROMPT_CHARS + 1);
        assert!(message(&prompt_request(&long)).contains("6145 characters"));
        assert!(check_fields(&prompt_request(&"é".repeat(MAX_PROMPT_CHARS))).is_ok());
    }

    #[test]
    fn sampling_ranges_name_field_and_rule() {
        let mut request = prompt_request("hi");
        request.sampling = Some(pb::SamplingParams {
            top_k: Some(51),
            ..Default::default()
        });
        assert_eq!(
            message(&request),
            "sampling.top_k is 51; it must be 1 to 50"
        );
        request.sampling = Some(pb::SamplingParams {
            temperature: Some(f32::NAN),
            ..Default::default()
        });
        assert!(message(&request).starts_with("sampling.temperature is NaN"));
        request.sampling = Some(pb::SamplingParams {
            seed: Some(MAX_SEED + 1),
            ..Default::default()
        });
        assert!(message(&request).contains("sampling.seed is 10000000000"));
    }

    #[test]
    fn max_tokens_zero_and_stops_are_checked() {
        let mut request = prompt_request("hi");
        request.max_tokens = Some(0);
        assert!(message(&request).contains("max_tokens is 0"));
        request.max_tokens = None;
        request.stop = vec!["a".into(); 5];
        assert!(message(&request).contains("stop has 5 strings"));
        request.stop = vec![String::new()];
        assert!(message(&request).contains("stop[0] is 0 characters"));
    }

    #[test]
    fn chat_roles_are_checked() {
        let request = pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Chat(pb::ChatInput {
                messages: vec![pb::ChatMessage {
                    role: "robot".into(),
                    content: "hi".into(),
                }],
                tools: vec![],
            })),
            ..Default::default()
        };
        assert!(message(&request).contains("chat.messages[0].role is \"robot\""));
    }

    #[test]
    fn defaults_fill_unset_sampling() {
        let resolved = resolve_sampling(None, 0.6);
        assert_eq!(resolved.temperature, 0.6);
        assert_eq!(resolved.top_p, 1.0);
        assert_eq!(resolved.repetition_penalty, 1.0);
        assert!((1..=MAX_SEED).contains(&resolved.seed));
        let seeded = pb::SamplingParams {
            seed: Some(42),
            temperature: Some(0.0),
            ..Default::default()
        };
        let resolved = resolve_sampling(Some(&seeded), 0.6);
        assert_eq!(resolved.seed, 42);
        assert_eq!(resolved.temperature, 0.0);
    }
}
