//! What an appliance vendor links: the driver and the state core embed without the daemon's
//! runtime. The normal dependency trees of `hal`, `driver` and `cluster-core` (what a vendor's
//! build compiles, dev-dependencies aside) hold no tokio, no Raft, no protobuf and no clap;
//! `host`'s tree holds all four (which shows the check sees them). `cargo tree` reads the
//! lockfile and the local package cache only (`--locked --offline`). The four library crates
//! (`hal`, `driver`, `sim-bridge`, `cluster-core`) package for a registry.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates of the daemon's runtime, consensus and command line (and their sub-crates:
/// `tokio-macros`, `raft-proto`, `clap_builder`, ...).
const DAEMON_ONLY: &[&str] = &["tokio", "raft", "protobuf", "clap"];

/// Runs the cargo that runs this test with `args` (and `env`) in this workspace; its stdout,
/// or a failure with its stderr.
fn cargo(args: &[&str], env: &[(&str, &std::path::Path)]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package names in `package`'s normal dependency tree, itself included.
fn tree(package: &str) -> BTreeSet<String> {
    let args = [
        "tree",
        "-p",
        package,
        "-e",
        "normal",
        "--prefix",
        "none",
        "--locked",
        "--offline",
    ];
    cargo(&args, &[])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The daemon-only crates among `names`.
fn daemon_only(names: &BTreeSet<String>) -> Vec<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| {
            DAEMON_ONLY.iter().any(|b| {
                *n == *b || n.starts_with(&format!("{b}-")) || n.starts_with(&format!("{b}_"))
            })
        })
        .collect()
}

#[test]
fn driver_and_state_core_link_no_tokio_raft_protobuf_or_clap() {
    for (package, needs) in [
        ("hal", "thiserror"),
        ("driver", "hal"),
        ("cluster-core", "driver"),
    ] {
        let names = tree(package);
        // the tree was read: the package and what it is built on are in it
        assert!(
            names.contains(package) && names.contains(needs),
            "{package}: {names:?}"
        );
        assert_eq!(
            daemon_only(&names),
            Vec::<&str>::new(),
            "{package} pulls in daemon-only crates"
        );
    }
}

#[test]
fn the_check_sees_the_daemons_crates_in_host() {
    let names = tree("host");
    let found = daemon_only(&names);
    for b in DAEMON_ONLY {
        assert!(found.contains(b), "{b} not found in host's tree: {found:?}");
    }
}

#[test]
fn the_library_crates_package_for_a_registry() {
    // Packaging checks what a registry needs: every dependency has a version, the readme is
    // there, the manifest's metadata is well formed. No build (`--no-verify`), into a scratch
    // target directory.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let mut args = vec!["package", "--no-verify", "--allow-dirty", "--offline"];
    for krate in ["hal", "driver", "sim-bridge", "cluster-core"] {
        args.extend(["-p", krate]);
    }
    cargo(&args, &[("CARGO_TARGET_DIR", scratch.path())]);
    for krate in ["hal", "driver", "sim-bridge", "cluster-core"] {
        let file = scratch
            .path()
            .join("package")
            .join(format!("{krate}-0.1.0.crate"));
        assert!(file.is_file(), "{} not written", file.display());
    }
}
