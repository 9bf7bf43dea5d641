//! Builds the Verilator model of the card when the `verilator` feature is on.
//!
//! `verilator --cc` turns `hdl/*.v` (top `card_top`) into C++ in `OUT_DIR`;
//! the `cc` crate compiles that, the Verilator runtime (once per build) and the
//! shim `csrc/shim.cpp` into one static library. The CAM depth is a Verilator
//! parameter fixed here: `SIM_BRIDGE_RTL_DEPTH` (default 1024).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "verilator")]
    rtl::build();
}

#[cfg(feature = "verilator")]
mod rtl {
    use std::env;
    use std::fs;
    use std::io::ErrorKind;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const INSTALL_HINT: &str =
        "Verilator not found: install it with `sudo apt-get install -y verilator` \
         (Debian/Ubuntu) or build without --features verilator";

    /// The CAM depth the model is built with.
    const DEFAULT_DEPTH: u32 = 1024;

    pub fn build() {
        let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
        let hdl = manifest.join("..").join("hdl");
        let shim = manifest.join("csrc").join("shim.cpp");

        println!("cargo:rerun-if-env-changed=SIM_BRIDGE_RTL_DEPTH");
        println!("cargo:rerun-if-env-changed=VERILATOR_ROOT");
        println!("cargo:rerun-if-changed={}", shim.display());
        println!(
            "cargo:rerun-if-changed={}",
            hdl.join("generated").join("regmap.vh").display()
        );

        let depth: u32 = match env::var("SIM_BRIDGE_RTL_DEPTH") {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                panic!("SIM_BRIDGE_RTL_DEPTH={v:?} is not a number: set it to the CAM depth, e.g. 1024")
            }),
            Err(_) => DEFAULT_DEPTH,
        };
        assert!(
            depth >= 2,
            "SIM_BRIDGE_RTL_DEPTH must be at least 2, not {depth}"
        );

        let root = verilator_root();
        let sources = rtl_sources(&hdl);
        // Not the directory itself (cargo would scan hdl/crypto/ and CARD.md
        // too): a Verilog file added later is only used once card_top.v
        // instantiates it, and that edit reruns this script.
        for s in &sources {
            println!("cargo:rerun-if-changed={}", s.display());
        }

        // Verilate into a fresh directory so that no stale file is compiled.
        let mdir = out.join("verilated");
        if mdir.exists() {
            fs::remove_dir_all(&mdir).expect("remove the old Verilator output directory");
        }
        let mut cmd = Command::new("verilator");
        cmd.arg("--cc")
            .arg("--Mdir")
            .arg(&mdir)
            .args(["--top-module", "card_top", "--prefix", "Vcard_top"])
            .arg(format!("-GDEPTH={depth}"))
            .args(["--x-assign", "fast", "--x-initial", "unique", "-O3"])
            .arg(format!("-I{}", hdl.join("generated").display()))
            .args(&sources);
        let status = cmd.status().unwrap_or_else(|e| match e.kind() {
            ErrorKind::NotFound => fail(INSTALL_HINT),
            _ => fail(&format!("running verilator failed: {e}")),
        });
        assert!(
            status.success(),
            "verilator --cc on {} failed ({status})",
            hdl.display()
        );

        let classes = fs::read_to_string(mdir.join("Vcard_top_classes.mk"))
            .expect("Verilator wrote no Vcard_top_classes.mk");
        let include = root.join("include");

        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            .opt_level(1)
            .debug(false)
            .warnings(false)
            .include(&include)
            .include(include.join("vltstd"))
            .include(&mdir)
            .define("VM_COVERAGE", "0")
            .define("VM_SC", "0")
            .define("VM_TRACE", "0")
            .define("VM_TRACE_FST", "0")
            .define("VM_TRACE_VCD", "0")
            .define("VL_USER_FATAL", None)
            .define("VL_USER_STOP", None)
            .define("VL_USER_FINISH", None)
            .define("SIM_RTL_DEPTH", depth.to_string().as_str())
            .flag_if_supported("-Wno-unused-parameter")
            .flag_if_supported("-faligned-new")
            .flag_if_supported("-fcf-protection=none");
        for name in mk_list(&classes, "VM_GLOBAL_FAST")
            .into_iter()
            .chain(mk_list(&classes, "VM_GLOBAL_SLOW"))
        {
            b.file(include.join(format!("{name}.cpp")));
        }
        for var in [
            "VM_CLASSES_FAST",
            "VM_CLASSES_SLOW",
            "VM_SUPPORT_FAST",
            "VM_SUPPORT_SLOW",
        ] {
            for name in mk_list(&classes, var) {
                b.file(mdir.join(format!("{name}.cpp")));
            }
        }
        b.file(&shim);
        b.compile("card_rtl");
        println!("cargo:rustc-link-lib=pthread");

        fs::write(
            out.join("rtl_params.rs"),
            format!(
                "/// CAM depth (`DEPTH` parameter) the RTL model was built with (`SIM_BRIDGE_RTL_DEPTH`).\n\
                 pub const RTL_DEPTH: u32 = {depth};\n"
            ),
        )
        .expect("write rtl_params.rs");
    }

    /// Stop the build with `msg` (and without a panic's backtrace noise).
    fn fail(msg: &str) -> ! {
        println!("cargo:warning={msg}");
        eprintln!("error: {msg}");
        std::process::exit(1)
    }

    /// `$VERILATOR_ROOT` as Verilator itself reports it.
    fn verilator_root() -> PathBuf {
        let out = Command::new("verilator")
            .args(["--getenv", "VERILATOR_ROOT"])
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => fail(INSTALL_HINT),
            Err(e) => panic!("running `verilator --getenv VERILATOR_ROOT` failed: {e}"),
        };
        assert!(
            out.status.success(),
            "`verilator --getenv VERILATOR_ROOT` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            root.join("include").join("verilated.cpp").exists(),
            "Verilator's runtime is missing under {} (expected include/verilated.cpp)",
            root.display()
        );
        root
    }

    /// Every Verilog file of the card, sorted.
    fn rtl_sources(hdl: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(hdl)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", hdl.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "v" || x == "sv"))
            .collect();
        // The SA table / ESP engine and its AES-GCM core (test benches live in crypto/tb/).
        let crypto = hdl.join("crypto");
        if let Ok(rd) = fs::read_dir(&crypto) {
            v.extend(
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "v")),
            );
        }
        v.sort();
        assert!(!v.is_empty(), "no Verilog sources in {}", hdl.display());
        v
    }

    /// The names listed in a make variable of Verilator's `*_classes.mk`.
    fn mk_list(mk: &str, var: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut inside = false;
        for line in mk.lines() {
            let t = line.trim();
            if !inside {
                if let Some(rest) = t.strip_prefix(var) {
                    let rest = rest.trim_start();
                    if rest.starts_with("+=") || rest.starts_with('=') {
                        inside = t.ends_with('\\');
                        let rest = rest.trim_start_matches("+=").trim_start_matches('=');
                        names.extend(
                            rest.split_whitespace()
                                .filter(|w| *w != "\\")
                                .map(str::to_owned),
                        );
                    }
                }
            } else {
                inside = t.ends_with('\\');
                names.extend(
                    t.split_whitespace()
                        .filter(|w| *w != "\\")
                        .map(str::to_owned),
                );
            }
        }
        names
    }
}
