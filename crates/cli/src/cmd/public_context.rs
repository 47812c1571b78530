//! `--public-context FILE` of `selene run` and `selene client`: the public prefix
//! ("selective by span", ARCHITECTURE.md). The file's text runs in plaintext on the server (the
//! session's `PublicPrefix` request), which keeps the layers it runs itself and returns
//! the keys and values of the client's layers; the prompt after it runs as the chosen
//! mode runs every private token.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use selene_model::{ChatTemplate, Message, Role, Tokenizer, Weights};
use selene_protocol::PrefixKv;

use super::args::GenerationArgs;
use super::stream::{stream_text, stream_with, GenerationRun, TokenLoop};

/// The prompt split into a public prefix (already run by the server) and a private rest.
#[derive(Debug)]
pub struct PublicContext {
    /// The private part of the input, as text (chat template applied if asked).
    pub private_text: String,
    /// The client's rows: every layer in strict mode, layers `0..k` in selective mode.
    pub client: PrefixKv,
}

/// Streams a generation of the prompt, or of the private part after `prefix`.
///
/// # Errors
/// Whatever tokenization or the token loop fail with.
pub fn stream(
    args: &GenerationArgs,
    prefix: Option<&PublicContext>,
    w: &Weights,
    t: &Tokenizer,
    on_token: &mut dyn FnMut(usize),
    token_loop: &mut TokenLoop<'_>,
) -> anyhow::Result<GenerationRun> {
    match prefix {
        Some(pc) => stream_text(args, &pc.private_text, w, t, on_token, token_loop),
        None => stream_with(args, w, t, on_token, token_loop),
    }
}

/// Splits the input: with `chat`, the file becomes the system message and the prompt the
/// user turn; without it, the file's text comes right before the prompt.
pub fn split(context: &str, prompt: &str, chat: Option<&ChatTemplate>) -> (String, String) {
    let Some(template) = chat else {
        return (context.to_string(), prompt.to_string());
    };
    let public = template.render(&[Message::new(Role::System, context)], false);
    let whole = template.render(
        &[
            Message::new(Role::System, context),
            Message::new(Role::User, prompt),
        ],
        true,
    );
    // The template renders message after message, so the system turn is a prefix.
    let private = whole.strip_prefix(&public).unwrap_or(&whole).to_string();
    (public, private)
}

/// Reads `path`, has the server run its tokens in plaintext through `run_prefix` (which
/// returns the keys and values of the client's layers `0..k`, every layer when `k` is the
/// model's depth) and reports on stderr.
///
/// # Errors
/// An unreadable or empty file, the server's refusal, a prefix longer than the context.
pub fn prepare(
    path: &Path,
    prompt: &str,
    chat: bool,
    w: &Weights,
    t: &Tokenizer,
    k: usize,
    run_prefix: &mut dyn FnMut(&[u32]) -> anyhow::Result<PrefixKv>,
) -> anyhow::Result<PublicContext> {
    let context = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let (public, private_text) = split(&context, prompt, chat.then(|| t.chat_template()));
    let pub_ids = t.encode(&public)?;
    anyhow::ensure!(
        !pub_ids.is_empty(),
        "--public-context {} holds no text",
        path.display()
    );
    let priv_ids = t.encode(&private_text)?;
    if t.encode(&format!("{public}{private_text}"))? != [pub_ids.clone(), priv_ids.clone()].concat()
    {
        eprintln!(
            "[note: the public context and the prompt do not meet at a token boundary (end the \
             file with a newline); they are tokenized separately]"
        );
    }
    let c = w.config();
    let start = Instant::now();
    let client = run_prefix(&pub_ids).context("the server did not run the public context")?;
    anyhow::ensure!(
        client.layers() == (0..k.min(c.n_layers)),
        "the server returned the public context's keys and values for layers {:?}, not 0..{k}",
        client.layers()
    );
    eprintln!(
        "[public context: {} tokens ran in plaintext on the server, {:.1} MB of keys and values \
         for {} layers came back in {:.2} s; private: {} tokens run from position {} on, {}]",
        pub_ids.len(),
        client.memory_bytes() as f64 / 1e6,
        client.layers().len(),
        start.elapsed().as_secs_f64(),
        priv_ids.len(),
        pub_ids.len(),
        if k < c.n_layers {
            format!("encrypted through layer {k}")
        } else {
            "every layer encrypted".to_string()
        }
    );
    Ok(PublicContext {
        private_text,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_split_puts_the_system_turn_first_and_nothing_is_lost() {
        let (public, private) = split("Be brief.", "Hi", Some(&ChatTemplate::default()));
        assert_eq!(public, "<|im_start|>system\nBe brief.<|im_end|>\n");
        assert_eq!(
            private,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(split("ctx\n", "p", None), ("ctx\n".into(), "p".into()));
    }
}
