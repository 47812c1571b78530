//! Which products run encrypted, and their index on the wire and in every per-layer
//! array of four (layouts, prepared matrices).

use selene_model::{FusedPair, LinearStage};

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

/// One product a `Products` request may ask for: a layer's stage, or one of its fused
/// pairs' matrices (`selene_model::fused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    /// One of [`ENCRYPTED_STAGES`].
    Stage(LinearStage),
    /// The fused matrix of a pair (`W' Wo` or `W'' Wdown`).
    Fused(FusedPair),
}

impl Product {
    /// Its byte on the wire: the stage's index in [`ENCRYPTED_STAGES`], then 4 for
    /// `W' Wo` and 5 for `W'' Wdown`; 255 for a stage that is not encrypted.
    pub fn to_byte(self) -> u8 {
        match self {
            Product::Stage(s) => stage_index(s).map_or(u8::MAX, |i| i as u8),
            Product::Fused(FusedPair::AttnGate) => 4,
            Product::Fused(FusedPair::DownQkv) => 5,
        }
    }

    /// The product a wire byte names, if any.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            4 => Some(Product::Fused(FusedPair::AttnGate)),
            5 => Some(Product::Fused(FusedPair::DownQkv)),
            _ => ENCRYPTED_STAGES
                .get(usize::from(b))
                .map(|s| Product::Stage(*s)),
        }
    }
}
