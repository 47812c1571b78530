//! Both halves of selective mode in one process without a session: the client's
//! encrypted layers and release, fed straight into a server tail. What tests and
//! benchmarks use to compare selective mode with the plaintext model; a deployment runs
//! the tail behind a session ([`crate::generate_session`]).

use std::ops::ControlFlow;

use selene_model::{generate_with, Sampler};

use crate::client::SelectiveClient;
use crate::error::Result;
use crate::server::PlainTail;
use crate::transport::Transport;

/// Generates up to `max_tokens` tokens in selective mode, like [`selene_model::generate`]:
/// the client runs the first layers encrypted and releases, the server tail returns
/// logits, the sampler picks.
///
/// # Errors
/// An empty prompt and whatever either side or `on_token` fails with.
pub fn generate_selective<T: Transport>(
    client: &mut SelectiveClient<'_, T>,
    server: &mut PlainTail<'_>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
) -> Result<Vec<u32>> {
    generate_with(
        prompt,
        max_tokens,
        stop,
        sampler,
        &mut |ids| server.handle(&client.step(ids)?),
        &mut |id| Ok(on_token(id)?),
    )
}
