//! Request validation against the JSON Schema files in `gateway/schema/`,
//! and the error messages that name the failing JSON path and rule.
//!
//! The messages are written here rather than taken from `jsonschema`'s
//! `Display`, which quotes the offending value: a 6145-character prompt
//! must not come back in an error body or a log line.

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::{json, Value};

use crate::error::ApiError;

const WORKERS_AI_SCHEMA: &str = include_str!("../schema/workers-ai-phi-2.request.json");
const OPENAI_SCHEMA: &str = include_str!("../schema/openai.request.json");

/// The request shapes the gateway validates.
#[derive(Clone, Copy, Debug)]
pub enum RequestSchema {
    /// The body of `POST /ai/run/{model}`.
    WorkersAi,
    /// The body of `POST /v1/completions`.
    OpenAiCompletion,
    /// The body of `POST /v1/chat/completions`.
    OpenAiChat,
}

struct Validators {
    workers_ai: Validator,
    openai_completion: Validator,
    openai_chat: Validator,
}

static VALIDATORS: LazyLock<Validators> = LazyLock::new(|| {
    // The schemas are compiled into the binary and a unit test compiles
    // them, so a failure here is a build defect, not a runtime condition.
    let workers_ai: Value =
        serde_json::from_str(WORKERS_AI_SCHEMA).expect("embedded schema is JSON");
    let openai: Value = serde_json::from_str(OPENAI_SCHEMA).expect("embedded schema is JSON");
    let definition = |name: &str| {
        let schema = json!({"$defs": openai["$defs"], "$ref": format!("#/$defs/{name}")});
        jsonschema::validator_for(&schema).expect("embedded schema compiles")
    };
    Validators {
        workers_ai: jsonschema::validator_for(&workers_ai).expect("embedded schema compiles"),
        openai_completion: definition("completion"),
        openai_chat: definition("chat"),
    }
});

/// Checks `body` against `schema`.
///
/// # Errors
/// [`ApiError::InvalidRequest`] describing the first failure: its JSON
/// pointer and the rule it breaks.
pub fn validate(schema: RequestSchema, body: &Value) -> Result<(), ApiError> {
    let validator = match schema {
        RequestSchema::WorkersAi => &VALIDATORS.workers_ai,
        RequestSchema::OpenAiCompletion => &VALIDATORS.openai_completion,
        RequestSchema::OpenAiChat => &VALIDATORS.openai_chat,
    };
    match validator.iter_errors(body).next() {
        None => Ok(()),
        Some(error) => {
            let (pointer, message) = describe(&error);
            Err(ApiError::invalid(&pointer, message))
        }
    }
}

/// Returns the JSON pointer of the value at fault and a sentence naming it
/// and the rule it breaks.
fn describe(error: &ValidationError<'_>) -> (String, String) {
    let pointer = error.instance_path().as_str().to_string();
    let place = if pointer.is_empty() {
        "the body".to_string()
    } else {
        pointer.clone()
    };
    let instance = error.instance();
    let message = match error.kind() {
        ValidationErrorKind::Type { kind } => {
            format!(
                "{place} must be {}, not {}",
                type_names(kind),
                type_of(instance)
            )
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("{place} must be at least {limit}, got {instance}")
        }
        ValidationErrorKind::Maximum { limit } => {
            format!("{place} must be at most {limit}, got {instance}")
        }
        ValidationErrorKind::MinLength { limit } => format!(
            "{place} must be at least {limit} character{} long, got {}",
            plural(*limit),
            char_count(instance)
        ),
        ValidationErrorKind::MaxLength { limit } => format!(
            "{place} must be at most {limit} characters long, got {}",
            char_count(instance)
        ),
        ValidationErrorKind::MinItems { limit } => {
            format!(
                "{place} must contain at least {limit} item{}",
                plural(*limit)
            )
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!(
                "{place} must contain at most {limit} item{}",
                plural(*limit)
            )
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            return (
                format!("{pointer}/{name}"),
                format!("{pointer}/{name} is required"),
            );
        }
        ValidationErrorKind::Enum { options } => format!("{place} must be one of {options}"),
        ValidationErrorKind::Constant { expected_value } => {
            format!("{place} must be {expected_value}")
        }
        // The only `oneOf` at the root picks the input of a Workers AI body.
        ValidationErrorKind::OneOfMultipleValid { .. } if pointer.is_empty() => {
            "the body must contain either prompt or messages, not both".to_string()
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            format!("{place} matches more than one allowed shape")
        }
        ValidationErrorKind::OneOfNotValid { context } => {
            return describe_one_of(&pointer, &place, context)
        }
        _ => format!("{place} is invalid: {}", error.masked()),
    };
    (pointer, message)
}

/// Explains a value that matched none of the `oneOf` branches, from the
/// errors of the branch that came closest.
///
/// A branch whose only failure is the value's own type, or a required
/// property missing right at the value, is a branch the client did not
/// mean. Any other branch was meant, so its first error is the useful one.
fn describe_one_of(
    pointer: &str,
    place: &str,
    context: &[Vec<ValidationError<'static>>],
) -> (String, String) {
    let at_value = |error: &ValidationError<'_>| error.instance_path().as_str() == pointer;
    let rank = |errors: &Vec<ValidationError<'static>>| {
        if errors
            .iter()
            .all(|e| at_value(e) && matches!(e.kind(), ValidationErrorKind::Type { .. }))
        {
            2
        } else if errors
            .iter()
            .all(|e| at_value(e) && matches!(e.kind(), ValidationErrorKind::Required { .. }))
        {
            1
        } else {
            0
        }
    };
    let best = context
        .iter()
        .filter(|errors| !errors.is_empty())
        .min_by_key(|errors| rank(errors));
    match best {
        Some(errors) if rank(errors) == 0 => describe(&errors[0]),
        Some(errors) if rank(errors) == 1 => {
            let names: Vec<String> = context
                .iter()
                .flatten()
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Required { property } => {
                        property.as_str().map(str::to_string)
                    }
                    _ => None,
                })
                .collect();
            (
                pointer.to_string(),
                format!("{place} must contain one of: {}", names.join(", ")),
            )
        }
        _ => {
            let mut names: Vec<String> = context
                .iter()
                .flatten()
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Type { kind } => Some(type_names(kind)),
                    _ => None,
                })
                .collect();
            names.dedup();
            (
                pointer.to_string(),
                format!("{place} must be {}", names.join(" or ")),
            )
        }
    }
}

fn type_names(kind: &TypeKind) -> String {
    let names: Vec<&str> = match kind {
        TypeKind::Single(single) => vec![single.as_str()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
    };
    names
        .iter()
        .map(|name| with_article(name))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn with_article(name: &str) -> String {
    match name {
        "null" => "null".to_string(),
        "integer" | "array" | "object" => format!("an {name}"),
        _ => format!("a {name}"),
    }
}

/// Names the JSON type of `value` for a type error.
fn type_of(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Number(n) if n.is_f64() => "a number with a fraction".to_string(),
        Value::Number(_) => "a number".to_string(),
        Value::String(_) => "a string".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

fn char_count(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

fn plural(count: u64) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(schema: RequestSchema, body: Value) -> (Option<String>, String) {
        match validate(schema, &body) {
            Err(ApiError::InvalidRequest { message, param }) => (param, message),
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn embedded_schemas_compile() {
        assert!(validate(RequestSchema::WorkersAi, &json!({"prompt": "hi"})).is_ok());
        assert!(validate(RequestSchema::OpenAiCompletion, &json!({"prompt": "hi"})).is_ok());
        let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert!(validate(RequestSchema::OpenAiChat, &chat).is_ok());
    }

    #[test]
    fn range_error_names_path_and_limit() {
        let (param, text) = message(
            RequestSchema::WorkersAi,
            json!({"prompt": "hi", "top_k": 51}),
        );
        assert_eq!(param.as_deref(), Some("/top_k"));
        assert_eq!(text, "/top_k must be at most 50, got 51");
    }

    #[test]
    fn wrong_prompt_type_names_prompt() {
        let (param, text) = message(RequestSchema::WorkersAi, json!({"prompt": 123}));
        assert_eq!(param.as_deref(), Some("/prompt"));
        assert!(text.contains("must be a string"), "{text}");
    }

    #[test]
    fn empty_body_names_both_inputs() {
        let (_, text) = message(RequestSchema::WorkersAi, json!({}));
        assert_eq!(text, "the body must contain one of: prompt, messages");
    }

    #[test]
    fn missing_content_is_named() {
        let body = json!({"messages": [{"role": "user"}]});
        let (param, text) = message(RequestSchema::WorkersAi, body);
        assert_eq!(param.as_deref(), Some("/messages/0/content"));
        assert_eq!(text, "/messages/0/content is required");
    }

    #[test]
    fn length_counts_characters() {
        let prompt: String = "字".repeat(6144);
        assert!(validate(RequestSchema::WorkersAi, &json!({ "prompt": prompt })).is_ok());
        let (_, text) = message(
            RequestSchema::WorkersAi,
            json!({ "prompt": "a".repeat(6145) }),
        );
        assert_eq!(
            text,
            "/prompt must be at most 6144 characters long, got 6145"
        );
    }

    #[test]
    fn openai_stop_shapes() {
        let body = json!({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]});
        let (param, text) = message(RequestSchema::OpenAiCompletion, body);
        assert_eq!(param.as_deref(), Some("/stop"));
        assert!(text.contains("at most 4 items"), "{text}");
        let (_, text) = message(
            RequestSchema::OpenAiCompletion,
            json!({"prompt": "hi", "stop": 5}),
        );
        assert!(text.contains("must be"), "{text}");
    }
}
