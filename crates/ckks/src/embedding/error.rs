//! Errors of the canonical embedding.

/// Why a transform into or out of the slots was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingError {
    /// The ring degree exponent is outside the supported range.
    #[error("log_n = {log_n} is outside the supported range {min}..={max}")]
    LogNOutOfRange {
        /// The requested log2 of the ring degree.
        log_n: u32,
        /// Smallest supported value.
        min: u32,
        /// Largest supported value.
        max: u32,
    },
    /// More slots were requested than the ring holds (at most N/2).
    #[error("log_slots = {log_slots} exceeds log_n - 1 = {max} (log_n = {log_n})")]
    LogSlotsTooLarge {
        /// The requested log2 of the slot count.
        log_slots: u32,
        /// The largest allowed value, log_n - 1.
        max: u32,
        /// The ring's log2 degree.
        log_n: u32,
    },
    /// A slot buffer is longer than the number of slots.
    #[error("{got} slots given but this encoder has only {max}")]
    SlotCount {
        /// The buffer's length.
        got: usize,
        /// The encoder's slot count.
        max: usize,
    },
    /// A coefficient buffer does not have exactly N entries.
    #[error("{got} coefficients given but the ring degree is {expected}")]
    CoeffLength {
        /// The buffer's length.
        got: usize,
        /// The ring degree N.
        expected: usize,
    },
    /// An input slot value is NaN or infinite.
    #[error("slot {index} is not finite")]
    NonFiniteSlot {
        /// Position of the offending value in the input.
        index: usize,
    },
    /// An input coefficient is NaN or infinite.
    #[error("coefficient {index} is not finite")]
    NonFiniteCoeff {
        /// Position of the offending value in the input.
        index: usize,
    },
    /// Finite inputs so large (near f64::MAX) that the transform overflowed at this output.
    #[error("output {index} overflowed to a non-finite value")]
    Overflow {
        /// Position of the first non-finite output.
        index: usize,
    },
}

/// Result alias of the embedding module.
pub type Result<T> = std::result::Result<T, EmbeddingError>;
