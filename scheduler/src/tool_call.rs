//! Finds a tool call in generated text.
//!
//! The prompt asks for `{"name": "...", "arguments": {...}}`. The first
//! JSON object in the output counts as a call when its `name` is one of the
//! request's tools and its `arguments` (or `parameters`) is an object or
//! absent. Anything else leaves the output as plain text.

use wick_proto::v1 as pb;

/// Parses the first JSON object of `text` as a call of one of `tools`.
pub fn parse(text: &str, tools: &[pb::Tool]) -> Option<pb::ToolCall> {
    if tools.is_empty() {
        return None;
    }
    let start = text.find('{')?;
    let mut values =
        serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    let serde_json::Value::Object(call) = values.next()?.ok()? else {
        return None;
    };
    let name = call.get("name")?.as_str()?;
    if !tools.iter().any(|tool| tool.name == name) {
        return None;
    }
    let arguments = match call.get("arguments").or_else(|| call.get("parameters")) {
        None => serde_json::Value::Object(Default::default()),
        Some(value @ serde_json::Value::Object(_)) => value.clone(),
        // Some models write the arguments as a string holding JSON.
        Some(serde_json::Value::String(inner)) => match serde_json::from_str(inner).ok()? {
            value @ serde_json::Value::Object(_) => value,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(pb::ToolCall {
        name: name.to_string(),
        arguments_json: arguments.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<pb::Tool> {
        vec![pb::Tool {
            name: "get_weather".into(),
            description: String::new(),
            parameters_json: String::new(),
        }]
    }

    #[test]
    fn well_formed_call_is_parsed() {
        let text = r#" Sure. {"name": "get_weather", "arguments": {"city": "Paris"}} done"#;
        let call = parse(text, &tools()).unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments_json, r#"{"city":"Paris"}"#);
    }

    #[test]
    fn string_arguments_are_unwrapped() {
        let text = r#"{"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}"#;
        assert_eq!(
            parse(text, &tools()).unwrap().arguments_json,
            r#"{"city":"Oslo"}"#
        );
    }

    #[test]
    fn undeclared_or_malformed_calls_are_text() {
        assert!(parse(r#"{"name": "launch", "arguments": {}}"#, &tools()).is_none());
        assert!(parse(r#"{"name": "get_weather", "arguments": [1]}"#, &tools()).is_none());
        assert!(parse(r#"{"name": "get_weather", "argu"#, &tools()).is_none());
        assert!(parse("no json here", &tools()).is_none());
        assert!(parse(r#"{"name": "get_weather"}"#, &[]).is_none());
    }
}
