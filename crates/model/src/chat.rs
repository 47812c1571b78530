//! The ChatML chat template of SmolLM2-Instruct and Qwen2.5-Instruct, written out in
//! Rust.
//!
//! Both GGUFs' `tokenizer.chat_template` (Jinja) render each message as
//! `<|im_start|>{role}\n{content}<|im_end|>\n`; when the first message is not a system
//! message they first insert a default system turn (which differs per model, and
//! [`ChatTemplate::from_gguf`] reads from the template), and with
//! `add_generation_prompt` they end with `<|im_start|>assistant\n`. `<|im_end|>` ends a
//! turn. (Qwen's template also has a tool-calling branch, which this does not render.)

use crate::error::{Error, Result};
use crate::gguf::{Gguf, Value};

/// The system turn the template inserts when the conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in the template.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Parses `system`, `user` or `assistant`.
    ///
    /// # Errors
    /// [`Error::BadRole`] for anything else.
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            other => Err(Error::BadRole {
                role: other.to_string(),
            }),
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// A model's ChatML template: the rendering is fixed, the default system prompt comes
/// from the GGUF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    default_system: String,
}

impl Default for ChatTemplate {
    fn default() -> Self {
        ChatTemplate {
            default_system: DEFAULT_SYSTEM_PROMPT.to_string(),
        }
    }
}

impl ChatTemplate {
    /// Reads the default system prompt from the GGUF's `tokenizer.chat_template`: the
    /// first literal `<|im_start|>system\n...<|im_end|>` whose text is a plain string
    /// (no Jinja expression in it). A file without a template gets SmolLM2's.
    ///
    /// # Errors
    /// [`Error::WrongType`] when the template is not ChatML (no `<|im_start|>`) or has
    /// no literal default system turn.
    pub fn from_gguf(g: &Gguf) -> Result<ChatTemplate> {
        let key = "tokenizer.chat_template";
        let Some(t) = g.metadata(key).and_then(Value::as_str) else {
            return Ok(ChatTemplate::default());
        };
        let bad = Error::WrongType {
            key,
            expected: "a ChatML template with a default system turn",
        };
        // The newline after the role is a real one in SmolLM2's template and the Jinja
        // escape `\n` (two characters) in Qwen's.
        for nl in ["\n", "\\n"] {
            let open = format!("<|im_start|>system{nl}");
            let mut rest = t;
            while let Some(i) = rest.find(&open) {
                rest = &rest[i + open.len()..];
                let Some(end) = rest.find("<|im_end|>") else {
                    break;
                };
                let text = &rest[..end];
                if !text.contains(['\'', '"', '{', '}', '+']) {
                    return Ok(ChatTemplate {
                        default_system: text.replace("\\n", "\n"),
                    });
                }
            }
        }
        Err(bad)
    }

    /// The system prompt inserted when a conversation has none.
    pub fn default_system(&self) -> &str {
        &self.default_system
    }

    /// Renders `messages` exactly as the model's Jinja chat template does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        render(&self.default_system, messages, add_generation_prompt)
    }
}

/// Renders `messages` exactly as SmolLM2's Jinja chat template does (see
/// [`ChatTemplate::render`] for any model).
pub fn apply_chat_template(messages: &[Message], add_generation_prompt: bool) -> String {
    render(DEFAULT_SYSTEM_PROMPT, messages, add_generation_prompt)
}

fn render(default_system: &str, messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    if messages.first().is_some_and(|m| m.role != Role::System) {
        out.push_str("<|im_start|>system\n");
        out.push_str(default_system);
        out.push_str("<|im_end|>\n");
    }
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(m.role.as_str());
        out.push('\n');
        out.push_str(&m.content);
        out.push_str("<|im_end|>\n");
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_system_turn_is_inserted_only_without_one() {
        let user = [Message::new(Role::User, "Hi")];
        assert_eq!(
            apply_chat_template(&user, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
             Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let sys = [
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello."),
        ];
        assert_eq!(
            apply_chat_template(&sys, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n"
        );
        assert_eq!(apply_chat_template(&[], true), "<|im_start|>assistant\n");
        assert!(Role::parse("tool").is_err());
    }
}
