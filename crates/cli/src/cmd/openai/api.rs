//! The request and response bodies of the chat completions API, and the checks that
//! turn a request into a generation or a 400.
//!
//! Honoured: `messages` (roles `system`, `developer` (as system), `user`, `assistant`;
//! content as a string or as text parts), `max_tokens` / `max_completion_tokens`,
//! `temperature`, `top_p`, `seed`, `stop`, `n` (1 only), `stream`,
//! `stream_options.include_usage`, `model` (which the router resolves against the
//! catalog before these checks; absent, the served model answers), and Selene's own
//! `selene` object. Other fields are ignored.

use selene_model::{Message, Role};
use serde::{Deserialize, Serialize};

use super::backend::BackendInfo;
use super::completion::{FinishReason, Usage};
use super::error::ApiError;

/// Most stop sequences per request (the API's limit).
pub const MAX_STOPS: usize = 4;

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The model to answer with: an id of `GET /v1/models` or a store name; absent, the
    /// served model.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Server-sent events instead of one JSON reply.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (older name).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Most tokens to generate (newer name; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature in [0, 2]; 0 is greedy. Default 1, as in the API.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass in (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Sampler seed (same seed, same text); random when absent.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Up to four strings that end the completion (not included in it).
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Completions per request: only 1.
    #[serde(default)]
    pub n: Option<u64>,
    /// Selene's own options.
    #[serde(default)]
    pub selene: Option<SeleneOptions>,
}

/// One message as sent.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Text, text parts, or null.
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; only `{"type":"text","text":...}` is supported.
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// The part's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// The `selene` object: Selene's options, documented in docs/openai.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeleneOptions {
    /// Layers run under encryption; the model's depth (30) is strict mode, fewer is
    /// selective mode (the server sees the flooded hidden states after them).
    #[serde(default)]
    pub encrypted_layers: Option<usize>,
    /// A public document or system prompt that becomes the conversation's system turn.
    #[serde(default)]
    pub public_context: Option<String>,
}

/// A request that passed every check, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The conversation, public context in place.
    pub messages: Vec<Message>,
    /// Most tokens to generate, when the request says.
    pub max_tokens: Option<usize>,
    /// Temperature (0 is greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// The seed, when the request gives one.
    pub seed: Option<u64>,
    /// Stop sequences.
    pub stops: Vec<String>,
    /// Server-sent events.
    pub stream: bool,
    /// A final usage chunk when streaming.
    pub include_usage: bool,
    /// Encrypted layers for this request.
    pub encrypted_layers: usize,
    /// True when the first message is `selene.public_context`, which the server runs in
    /// plaintext as a public prefix.
    pub public_context: bool,
}

impl ChatRequest {
    /// Checks every field against the API's ranges and the backend's limits.
    ///
    /// # Errors
    /// A 400 [`ApiError`] naming the field.
    pub fn check(self, info: &BackendInfo) -> Result<Checked, ApiError> {
        let bad = |param: &str, msg: String| ApiError::bad_request(Some(param), msg);
        if self.n.is_some_and(|n| n != 1) {
            return Err(bad("n", "only n = 1 is supported".into()));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => return Err(bad("max_tokens", "max_tokens must be at least 1".into())),
            Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
            None => None,
        };
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad(
                "temperature",
                format!("temperature {temperature} is outside [0, 2]"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(bad("top_p", format!("top_p {top_p} is outside (0, 1]")));
        }
        let stops = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) if v.len() > MAX_STOPS => {
                return Err(bad(
                    "stop",
                    format!("{} stop sequences; at most {MAX_STOPS}", v.len()),
                ))
            }
            Some(Stop::Many(v)) => v,
        };
        let options = self.selene.unwrap_or_default();
        let k = options
            .encrypted_layers
            .unwrap_or(info.default_encrypted_layers);
        if k > info.max_encrypted_layers {
            return Err(bad(
                "selene.encrypted_layers",
                format!(
                    "{k} encrypted layers asked for; the model has {} ({} is strict mode) \
                     and the server prepared {}",
                    info.n_layers, info.n_layers, info.max_encrypted_layers
                ),
            ));
        }
        let mut messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.check(i))
            .collect::<Result<Vec<_>, _>>()?;
        if messages.is_empty() {
            return Err(bad("messages", "messages must not be empty".into()));
        }
        let public_context = options.public_context.is_some();
        if let Some(public) = options.public_context {
            if messages.first().is_some_and(|m| m.role == Role::System) {
                return Err(bad(
                    "selene.public_context",
                    "the public context becomes the system message: send one or the other".into(),
                ));
            }
            messages.insert(0, Message::new(Role::System, public));
        }
        Ok(Checked {
            messages,
            max_tokens,
            temperature: temperature as f32,
            top_p: top_p as f32,
            // The API's seed is a signed integer; any 64 bits seed the sampler.
            seed: self.seed.map(|s| s as u64),
            stops,
            stream: self.stream.unwrap_or(false),
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            encrypted_layers: k,
            public_context,
        })
    }
}

impl ChatMessage {
    fn check(self, i: usize) -> Result<Message, ApiError> {
        let role = match self.role.as_str() {
            "developer" => Role::System,
            other => Role::parse(other).map_err(|_| {
                ApiError::bad_request(
                    Some(&format!("messages[{i}].role")),
                    format!("unknown role '{other}': use system, developer, user or assistant"),
                )
            })?,
        };
        let content = match self.content {
            None => String::new(),
            Some(Content::Text(s)) => s,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                Some(&format!("messages[{i}].content[{j}]")),
                                format!(
                                    "content part of type '{kind}' is not supported: text only"
                                ),
                            ))
                        }
                    }
                }
                text
            }
        };
        Ok(Message::new(role, content))
    }
}

/// `GET /v1/models` entry.
#[derive(Debug, Serialize)]
pub struct ModelCard<'a> {
    /// The model id.
    pub id: &'a str,
    /// Always `model`.
    pub object: &'static str,
    /// Unix time the endpoint started.
    pub created: u64,
    /// Always `selene`.
    pub owned_by: &'static str,
}

/// The assistant's reply in a non-streaming response.
#[derive(Debug, Serialize)]
pub struct ReplyMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The generated text.
    pub content: String,
}

/// One choice of a non-streaming response.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The reply.
    pub message: ReplyMessage,
    /// Always null.
    pub logprobs: Option<()>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// A non-streaming response.
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    /// `chatcmpl-...`.
    pub id: &'a str,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix time of the request.
    pub created: u64,
    /// The served model's id.
    pub model: &'a str,
    /// The one choice.
    pub choices: [Choice; 1],
    /// Token counts.
    pub usage: Usage,
}

/// The changing part of a streamed chunk's choice.
#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    /// `assistant` in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

/// One choice of a streamed chunk.
#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    /// Always 0.
    pub index: u32,
    /// New text.
    pub delta: Delta<'a>,
    /// Always null.
    pub logprobs: Option<()>,
    /// Set in the last content chunk.
    pub finish_reason: Option<FinishReason>,
}

/// One streamed chunk (`chat.completion.chunk`).
#[derive(Debug, Serialize)]
pub struct Chunk<'a> {
    /// The same id in every chunk of a response.
    pub id: &'a str,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix time of the request.
    pub created: u64,
    /// The served model's id.
    pub model: &'a str,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice<'a>>,
    /// Token counts, in the usage chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> BackendInfo {
        BackendInfo {
            model_id: "m".into(),
            context_length: 100,
            n_layers: 30,
            default_encrypted_layers: 30,
            max_encrypted_layers: 30,
            flood_sigma: 0.01,
            audit: Some(&selene_audit::measured::TABLES[0]),
        }
    }

    fn check(json: serde_json::Value) -> Result<Checked, ApiError> {
        serde_json::from_value::<ChatRequest>(json)
            .unwrap()
            .check(&info())
    }

    #[test]
    fn defaults_follow_the_api() {
        let c = check(serde_json::json!({"model": "x", "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "hi"}]}))
        .unwrap();
        assert_eq!(
            c.messages,
            vec![
                Message::new(Role::System, "ab"),
                Message::new(Role::User, "hi")
            ]
        );
        assert_eq!((c.temperature, c.top_p, c.stream), (1.0, 1.0, false));
        assert_eq!((c.max_tokens, c.seed, c.encrypted_layers), (None, None, 30));
        let c = check(
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5, "max_completion_tokens": 6, "stop": "x", "seed": -1,
            "selene": {"encrypted_layers": 4, "public_context": "doc"}}),
        )
        .unwrap();
        assert_eq!((c.max_tokens, c.seed), (Some(6), Some(u64::MAX)));
        assert_eq!((c.stops, c.encrypted_layers), (vec!["x".to_string()], 4));
        assert_eq!(c.messages[0], Message::new(Role::System, "doc"));
    }

    #[test]
    fn out_of_range_fields_are_400_naming_the_field() {
        let cases = [
            (
                serde_json::json!({"role": "tool", "content": "x"}),
                "messages[0].role",
            ),
            (
                serde_json::json!({"role": "user", "content": [{"type": "image_url"}]}),
                "messages[0].content[0]",
            ),
        ];
        for (m, param) in cases {
            let e = check(serde_json::json!({"messages": [m]})).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param));
        }
        let user = serde_json::json!([{"role": "user", "content": "hi"}]);
        for (field, value, param) in [
            ("max_tokens", serde_json::json!(0), "max_tokens"),
            ("temperature", serde_json::json!(2.5), "temperature"),
            ("temperature", serde_json::json!(-0.1), "temperature"),
            ("top_p", serde_json::json!(0), "top_p"),
            ("n", serde_json::json!(2), "n"),
            ("stop", serde_json::json!(["a", "b", "c", "d", "e"]), "stop"),
            (
                "selene",
                serde_json::json!({"encrypted_layers": 31}),
                "selene.encrypted_layers",
            ),
        ] {
            let mut req = serde_json::json!({"messages": user});
            req[field] = value;
            let e = check(req).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), Some(param), "{field}");
        }
        let e = check(serde_json::json!({"messages": []})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = check(
            serde_json::json!({"messages": [{"role": "system", "content": "s"}],
            "selene": {"public_context": "p"}}),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("selene.public_context"));
        assert!(serde_json::from_value::<ChatRequest>(
            serde_json::json!({"messages": user, "selene": {"encrypted_layer": 1}})
        )
        .is_err());
    }
}
