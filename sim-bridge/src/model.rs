//! Reference model (being built).
