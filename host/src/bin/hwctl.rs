//! hwctl: look inside a card (being built).
fn main() {}
