//! SmolLM2-Instruct's chat template, written out in Rust.
//!
//! The GGUF's `tokenizer.chat_template` (Jinja) renders each message as
//! `<|im_start|>{role}\n{content}<|im_end|>\n`; when the first message is not a system
//! message it first inserts a default system turn, and with `add_generation_prompt` it
//! ends with `<|im_start|>assistant\n`.

use crate::error::{Error, Result};

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

/// Renders `messages` exactly as the model's Jinja chat template does.
pub fn apply_chat_template(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    if messages.first().is_some_and(|m| m.role != Role::System) {
        out.push_str("<|im_start|>system\n");
        out.push_str(DEFAULT_SYSTEM_PROMPT);
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
