//! host (being built).
