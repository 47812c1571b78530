//! Which products run encrypted, and their index on the wire and in every per-layer
//! array of four (layouts, prepared matrices).

use selene_model::LinearStage;

use crate::error::{Error, Result};

/// The four per-layer products that run encrypted, in execution order. The LM head is
/// not among them: its matrix is the public embedding table, so the client applies it.
pub const ENCRYPTED_STAGES: [LinearStage; 4] = [
    LinearStage::Qkv,
    LinearStage::AttnOut,
    LinearStage::GateUp,
    LinearStage::Down,
];

/// Index of `stage` in [`ENCRYPTED_STAGES`].
pub(crate) fn stage_index(stage: LinearStage) -> Result<usize> {
    ENCRYPTED_STAGES
        .iter()
        .position(|s| *s == stage)
        .ok_or(Error::NotEncrypted { stage })
}
