//! Builds the Verilator model of the card when the `verilator` feature is on.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
