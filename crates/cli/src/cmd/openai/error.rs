//! Errors in the OpenAI shape: `{"error":{"message","type","param","code"}}` with the
//! HTTP status the API documents for each kind.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// `e` and its sources, joined by `: ` (what `anyhow`'s `{:#}` prints): library errors
/// leave their cause to the chain, so a message built from one error must walk it.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// One failed request, ready to be sent as the API's error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable reason.
    pub message: String,
    /// The API's error type (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// A stable machine-readable code, when there is one.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: the request is malformed or a field is out of range.
    pub fn bad_request(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// 400 with a code: the prompt and the completion do not fit in the context.
    pub fn context_exceeded(prompt: usize, max_tokens: usize, context: usize) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::bad_request(
                Some("max_tokens"),
                format!(
                    "this model's context holds {context} tokens, but the messages take \
                     {prompt} and max_tokens asks for {max_tokens} more"
                ),
            )
        }
    }

    /// 401: no API key, or the wrong one.
    pub fn unauthorized(missing: bool) -> Self {
        let message = if missing {
            "no API key: send it as 'Authorization: Bearer KEY'"
        } else {
            "incorrect API key"
        };
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.to_string(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 403: a request a web page could have sent on the user's behalf (a foreign `Origin`
    /// or a non-loopback `Host`: cross-site requests and DNS rebinding).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("cross_site_request"),
        }
    }

    /// 415: a POST body that is not declared `application/json`.
    pub fn unsupported_media_type(found: &str) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "the request body must be sent as 'Content-Type: application/json' (got                  '{found}')"
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("unsupported_media_type"),
        }
    }

    /// 404: no such route or model.
    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
        }
    }

    /// 404 as the API words it: the request's `model` names no model this endpoint
    /// answers with.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist or you do not have access to it."),
            kind: "invalid_request_error",
            param: Some("model".to_string()),
            code: Some("model_not_found"),
        }
    }

    /// 405: the route exists with another method.
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "method not allowed on this route".to_string(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(seconds: u64) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!("the request body did not arrive within {seconds} s"),
            kind: "invalid_request_error",
            param: None,
            code: Some("timeout"),
        }
    }

    /// 413: the body is larger than the limit.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body is larger than the limit of {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 503: the backend cannot take the request (busy past the queue timeout, or gone).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("backend_unavailable"),
        }
    }

    /// 500: the backend failed while generating.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The JSON body `{"error": {...}}`.
    pub fn body(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        serde_json::json!({
            "error": Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_api_shape() {
        let e = ApiError::bad_request(Some("temperature"), "too hot");
        assert_eq!(
            e.body(),
            serde_json::json!({"error": {"message": "too hot", "type": "invalid_request_error",
                "param": "temperature", "code": null}})
        );
        assert_eq!(
            ApiError::too_large(10).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ApiError::context_exceeded(1, 2, 3).body()["error"]["code"],
            "context_length_exceeded"
        );
    }

    /// A library error whose message leaves its source to the chain still reaches the
    /// API's message whole, its cause named once.
    #[test]
    fn messages_carry_the_whole_chain_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = selene_protocol::Error::Io(io);
        let text = with_causes(&e);
        assert_eq!(text, "i/o failed: no such file");
    }
}
