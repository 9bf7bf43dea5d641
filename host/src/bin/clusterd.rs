//! clusterd: the cluster daemon (being built).
fn main() {}
