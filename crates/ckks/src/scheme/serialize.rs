//! Versioned binary format (to come).
