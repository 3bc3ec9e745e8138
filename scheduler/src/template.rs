//! Prompt templates: what text the model actually continues.
//!
//! phi-2 has no chat template of its own, so the scheduler uses the format
//! of Workers AI's public clients:
//! - a prompt becomes `Instruct: {prompt}\nOutput: ` (unless `raw`);
//! - chat messages become `User: {content}\n` and `Assistant:{content}\n`
//!   lines, tool results `Tool: {content}\n` lines, and system messages are
//!   dropped. The prompt then ends with `Assistant:`, so the model's next
//!   tokens are the assistant's answer.
//! - With tools, a description of them and the JSON form of a call come
//!   before the conversation.
//!
//! A model that brings its own Jinja chat template (`Describe.chat_template`)
//! gets `messages`, `tools` and `add_generation_prompt = true` rendered
//! through it instead.

use std::fmt::Write;

use wick_proto::v1 as pb;

use crate::error::RequestError;

pub const PHI2_INSTRUCT_PREFIX: &str = "Instruct: ";
pub const PHI2_OUTPUT_PREFIX: &str = "\nOutput: ";

/// Renders the request's input as the text to tokenize.
///
/// Errors with [`RequestError::Template`] when the Jinja template fails.
pub fn render(
    input: &pb::generate_request::Input,
    raw: bool,
    chat_template: Option<&str>,
) -> Result<String, RequestError> {
    match input {
        pb::generate_request::Input::Prompt(prompt) if raw => Ok(prompt.clone()),
        pb::generate_request::Input::Prompt(prompt) => Ok(format!(
            "{PHI2_INSTRUCT_PREFIX}{prompt}{PHI2_OUTPUT_PREFIX}"
        )),
        pb::generate_request::Input::Chat(chat) => match chat_template {
            Some(template) => render_jinja(template, chat),
            None => Ok(render_phi2_chat(chat)),
        },
    }
}

fn render_phi2_chat(chat: &pb::ChatInput) -> String {
    let mut text = String::new();
    if !chat.tools.is_empty() {
        text.push_str(&describe_tools(&chat.tools));
    }
    for message in &chat.messages {
        match message.role.as_str() {
            "user" => {
                let _ = writeln!(text, "User: {}", message.content);
            }
            "assistant" => {
                let _ = writeln!(text, "Assistant:{}", message.content);
            }
            "tool" => {
                let _ = writeln!(text, "Tool: {}", message.content);
            }
            // System messages are dropped, as Workers AI does for phi-2.
            _ => {}
        }
    }
    text.push_str("Assistant:");
    text
}

/// Describes the tools and the one form of call that the scheduler parses
/// (see `tool_call`).
fn describe_tools(tools: &[pb::Tool]) -> String {
    let mut text = String::from(
        "You can call these tools. To call one, answer with only a JSON object of the form \
         {\"name\": \"<tool name>\", \"arguments\": {<arguments>}}.\nTools:\n",
    );
    for tool in tools {
        let parameters = if tool.parameters_json.is_empty() {
            "{}"
        } else {
            tool.parameters_json.as_str()
        };
        let _ = writeln!(
            text,
            "- {}: {} Arguments (JSON Schema): {}",
            tool.name, tool.description, parameters
        );
    }
    text
}

fn render_jinja(template: &str, chat: &pb::ChatInput) -> Result<String, RequestError> {
    let messages: Vec<serde_json::Value> = chat
        .messages
        .iter()
        .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
        .collect();
    let tools: Vec<serde_json::Value> = chat
        .tools
        .iter()
        .map(|t| {
            // Validation already checked that parameters_json is an object.
            let parameters: serde_json::Value =
                serde_json::from_str(&t.parameters_json).unwrap_or_else(|_| serde_json::json!({}));
            serde_json::json!({
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": parameters},
            })
        })
        .collect();
    let tools = if tools.is_empty() {
        minijinja::Value::from(())
    } else {
        jinja_value(serde_json::Value::Array(tools))
    };
    let mut env = minijinja::Environment::new();
    env.add_template("chat", template)
        .map_err(|e| RequestError::Template(e.to_string()))?;
    let context = minijinja::context! {
        messages => jinja_value(serde_json::Value::Array(messages)),
        tools => tools,
        add_generation_prompt => true,
        bos_token => "",
        eos_token => "",
    };
    env.get_template("chat")
        .and_then(|t| t.render(context))
        .map_err(|e| RequestError::Template(e.to_string()))
}

/// Converts JSON to a template value; minijinja's serde support is not
/// enabled in this workspace.
fn jinja_value(value: serde_json::Value) -> minijinja::Value {
    use minijinja::Value;
    match value {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(items) => {
            Value::from(items.into_iter().map(jinja_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from(
            map.into_iter()
                .map(|(k, v)| (k, jinja_value(v)))
                .collect::<std::collections::BTreeMap<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(messages: &[(&str, &str)], tools: Vec<pb::Tool>) -> pb::generate_request::Input {
        pb::generate_request::Input::Chat(pb::ChatInput {
            messages: messages
                .iter()
                .map(|(role, content)| pb::ChatMessage {
                    role: role.to_string(),
                    content: content.to_string(),
                })
                .collect(),
            tools,
        })
    }

    #[test]
    fn prompt_uses_instruct_template_unless_raw() {
        let input = pb::generate_request::Input::Prompt("Hi".into());
        assert_eq!(
            render(&input, false, None).unwrap(),
            "Instruct: Hi\nOutput: "
        );
        assert_eq!(render(&input, true, None).unwrap(), "Hi");
    }

    #[test]
    fn chat_drops_system_and_ends_with_assistant() {
        let input = chat(
            &[
                ("system", "be nice"),
                ("user", "Hi"),
                ("assistant", " Hello"),
                ("user", "Bye"),
            ],
            vec![],
        );
        assert_eq!(
            render(&input, false, None).unwrap(),
            "User: Hi\nAssistant: Hello\nUser: Bye\nAssistant:"
        );
    }

    #[test]
    fn chat_with_tools_describes_them_first() {
        let tool = pb::Tool {
            name: "get_weather".into(),
            description: "Weather of a city.".into(),
            parameters_json: r#"{"type":"object"}"#.into(),
        };
        let text = render(&chat(&[("user", "Weather?")], vec![tool]), false, None).unwrap();
        assert!(text.starts_with("You can call these tools."));
        assert!(text.contains(
            "- get_weather: Weather of a city. Arguments (JSON Schema): {\"type\":\"object\"}\n"
        ));
        assert!(text.ends_with("User: Weather?\nAssistant:"));
    }

    #[test]
    fn jinja_template_renders_messages() {
        let template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
        let text = render(&chat(&[("user", "Hi")], vec![]), false, Some(template)).unwrap();
        assert_eq!(text, "<user>Hi<assistant>");
        let broken = render(&chat(&[("user", "Hi")], vec![]), false, Some("{% for %}"));
        assert!(matches!(broken, Err(RequestError::Template(_))));
    }
}
