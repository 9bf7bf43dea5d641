//! hwctl, run as a process.

mod common;

use common::{fails, json, ok};

#[test]
fn status_table() {
    let out = ok(&["--device", "model", "status"]);
    assert!(
        out.contains("BLOCK  TYPE        VERSION  OFFSET   NEXT"),
        "{out}"
    );
    assert!(
        out.contains("IDENT  0x49444e54  1.0      0x00000  0x01000"),
        "{out}"
    );
    assert!(
        out.contains("CAM    0x5443414d  2.1      0x01000  0x02000"),
        "{out}"
    );
    assert!(out.contains("CAM depth        1024"), "{out}");
    assert!(out.contains("occupancy        0 / 1024"), "{out}");
}

#[test]
fn status_json() {
    let v = json(&[
        "--device",
        "model:depth=256",
        "--seed-entries",
        "30",
        "--json",
        "status",
    ]);
    assert_eq!(v["blocks"][0]["name"], "IDENT");
    assert_eq!(v["blocks"][0]["offset"], "0x00000");
    assert_eq!(v["blocks"][1]["name"], "CAM");
    assert_eq!(v["blocks"][1]["version"], "2.1");
    assert_eq!(v["blocks"][4]["name"], "PORT");
    assert_eq!(v["cam"]["depth"], 256);
    assert_eq!(v["cam"]["key_bits"], 320);
    assert_eq!(v["cam"]["did_bits"], 12);
    assert_eq!(v["occupancy"], 30);
    assert_eq!(v["counters"]["occupancy"], 30);
    assert_eq!(v["counters"]["err_count"], 0);
    assert_eq!(v["build_id"], "0x20261121");
    assert_eq!(v["bar_bytes"], 65536);
}

#[test]
fn dump_table_and_json() {
    let out = ok(&["--device", "model", "--seed-entries", "16", "dump"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SLOT  DID  HIT  STATE") && lines[0].contains("RESULT"),
        "{out}"
    );
    assert_eq!(lines.len(), 1 + 16 + 1, "{out}");
    assert_eq!(*lines.last().unwrap(), "16 entries");
    assert!(out.contains("esp -> 12.0.0.0 spi=0x10000000"), "{out}");
    assert!(out.contains(":* -> "), "wildcards are shown: {out}");

    let v = json(&[
        "--device",
        "model",
        "--seed-entries",
        "40",
        "dump",
        "--json",
    ]);
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 40);
    for (i, e) in a.iter().enumerate() {
        assert_eq!(e["slot"], i);
        assert!(e["key"]["type"].is_string(), "{e}");
        assert_eq!(e["key_words"].as_array().unwrap().len(), 10);
        assert!(e["result"]["action"].is_string());
    }
    // Every third seeded entry was looked up, so its hit bit is set.
    assert_eq!(a[0]["hit"], true);
    assert_eq!(a[1]["hit"], false);
    // A wildcard (UDP any source port) is a JSON null.
    assert_eq!(a[1]["key"]["type"], "udp");
    assert!(a[1]["key"]["src_port"].is_null());

    let did = a[5]["did"].as_u64().unwrap();
    let did_arg = did.to_string();
    let v = json(&[
        "--device",
        "model",
        "--seed-entries",
        "40",
        "--json",
        "dump",
        "--did",
        &did_arg,
    ]);
    let f = v.as_array().unwrap();
    assert!(!f.is_empty());
    assert!(f.iter().all(|e| e["did"].as_u64() == Some(did)));
    let empty = ok(&["--device", "model", "dump", "--did", "3"]);
    assert!(empty.contains("0 entries with --did 3"), "{empty}");
}

#[test]
fn regs_walks_every_block() {
    let out = ok(&["--device", "model", "regs"]);
    assert!(out.contains("IDENT block at 0x00000"), "{out}");
    assert!(out.contains("CAM block at 0x01000"), "{out}");
    assert!(out.contains("0x0100c  CAP_DEPTH"), "{out}");
    assert!(out.contains("KEY[9]"), "{out}");
    let v = json(&["--device", "model", "--json", "regs"]);
    let blocks = v.as_array().unwrap();
    assert_eq!(blocks.len(), 5);
    let ident = blocks[0]["regs"].as_array().unwrap();
    let magic = ident.iter().find(|r| r["name"] == "MAGIC").unwrap();
    assert_eq!(magic["value"], "0x53544331");
    assert_eq!(magic["access"], "RO");
    let cam = blocks[1]["regs"].as_array().unwrap();
    assert_eq!(
        cam.iter()
            .filter(|r| r["name"].as_str().unwrap().starts_with("MASK["))
            .count(),
        10
    );
    assert_eq!(blocks[1]["name"], "CAM");
}

#[test]
fn bad_arguments_fail_clearly() {
    fails(&["status"], 2, "--device");
    fails(&["--device", "modem", "status"], 2, "unknown device kind");
    fails(&["--device", "model:depth=0", "status"], 2, "depth must be");
    fails(&["--device", "model"], 2, "Usage");
    fails(&["--device", "model", "frobnicate"], 2, "frobnicate");
    fails(&["--device", "model", "dump", "--did", "4096"], 2, "4096");
    fails(
        &["--device", "model", "--seed-entries", "-1", "status"],
        2,
        "-1",
    );
    fails(
        &["--device", "model:depth=8", "--seed-entries", "9", "status"],
        1,
        "more than the CAM holds",
    );
}

#[test]
fn real_and_remote_devices_that_are_not_there_say_device_cause_and_fix() {
    fails(
        &["--device", "vfio:0000:99:00.0", "status"],
        1,
        "vfio:0000:99:00.0: no PCI device at 0000:99:00.0",
    );
    fails(
        &["--device", "pci:/nonexistent/resource0", "status"],
        1,
        "pci:/nonexistent/resource0: no such device",
    );
    fails(
        &["--device", "unix:/nonexistent/node1.sock", "status"],
        1,
        "unix:/nonexistent/node1.sock: cannot connect to the control socket: no such socket",
    );
    for dev in [
        "vfio:0000:99:00.0",
        "pci:/nonexistent/resource0",
        "unix:/nonexistent/node1.sock",
    ] {
        fails(&["--device", dev, "status"], 1, "fix:");
    }
    fails(
        &[
            "--device",
            "vfio:0000:03:00.0",
            "--seed-entries",
            "3",
            "status",
        ],
        1,
        "refusing",
    );
    if !cfg!(feature = "verilator") {
        fails(
            &["--device", "verilator", "status"],
            1,
            "--features verilator",
        );
    }
}

#[test]
fn help_documents_specs_and_seeding() {
    let out = ok(&["--help"]);
    assert!(out.contains("DEVICE SPEC"), "{out}");
    assert!(out.contains("--seed-entries"), "{out}");
    assert!(out.contains("vfio:BDF"), "{out}");
}

/// With the Verilator backend built in, the RTL card looks exactly like the
/// model through hwctl (apart from the backend's name).
#[cfg(feature = "verilator")]
#[test]
fn verilator_matches_the_model() {
    for cmd in [&["status"][..], &["dump"][..], &["regs"][..]] {
        let run = |dev: &str| {
            let mut args = vec!["--device", dev, "--seed-entries", "50", "--json"];
            args.extend_from_slice(cmd);
            let mut v = json(&args);
            if let Some(o) = v.as_object_mut() {
                o.remove("device");
            }
            v
        };
        assert_eq!(run("verilator"), run("model"), "hwctl {cmd:?}");
    }
}

#[test]
fn completions_and_man_pages_need_no_device() {
    let script = ok(&["completions", "bash"]);
    assert!(script.contains("complete -F _hwctl"), "{script}");
    for sub in ["status", "dump", "regs", "sas", "esp", "forward", "man"] {
        assert!(script.contains(sub), "no {sub} in the completions");
    }
    assert!(script.contains("--device") && script.contains("--seed-entries"));
    let t = common::TempDir::new("man");
    let listed = ok(&["man", t.dir().to_str().unwrap()]);
    for page in [
        "hwctl.1",
        "hwctl-status.1",
        "hwctl-dump.1",
        "hwctl-esp-decrypt.1",
    ] {
        assert!(t.dir().join(page).is_file(), "no {page}: {listed}");
    }
    let top = std::fs::read_to_string(t.dir().join("hwctl.1")).unwrap();
    assert!(
        top.contains(".TH hwctl 1") && top.contains("forward"),
        "{top}"
    );
    // every other command still needs --device
    let err = fails(&["status"], 2, "--device SPEC is needed");
    assert!(err.contains("Usage"), "{err}");
}

#[test]
fn j_is_compact_json_p_is_pretty() {
    let args = |f: &'static str| ["--device", "model", "--seed-entries", "5", f, "status"];
    let compact = ok(&args("-j"));
    assert_eq!(compact.lines().count(), 1, "{compact}");
    assert_eq!(ok(&args("--json")), compact, "--json is -j");
    let pretty = ok(&args("-p"));
    assert!(pretty.lines().count() > 10, "{pretty}");
    assert_eq!(ok(&args("--pretty")), pretty);
    let a: serde_json::Value = serde_json::from_str(&compact).unwrap();
    let b: serde_json::Value = serde_json::from_str(&pretty).unwrap();
    assert_eq!(a, b, "the same document");
    assert_eq!(a["occupancy"], 5);
    let dump = ok(&["--device", "model", "--seed-entries", "5", "-j", "dump"]);
    assert_eq!(dump.lines().count(), 1, "{dump}");
}

#[test]
fn seeded_entries_cover_the_identifiers_in_order() {
    // the README's example: entry 7 has identifier 7
    let out = ok(&[
        "--device",
        "model",
        "--seed-entries",
        "20",
        "dump",
        "--did",
        "7",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + 1 + 1, "{out}");
    assert!(lines[1].starts_with("7     7 "), "{out}");
    assert_eq!(lines[2], "1 entry with --did 7");
    // 300 entries: identifiers 0..=43 twice (i and i + 256)
    let v = json(&[
        "--device",
        "model",
        "--seed-entries",
        "300",
        "-j",
        "dump",
        "--did",
        "43",
    ]);
    let slots: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(slots, vec![43, 299]);
}

#[test]
fn regs_descriptions_are_plain_text() {
    let out = ok(&["--device", "model", "regs"]);
    assert!(out.contains("Block type id (CAM)."), "{out}");
    assert!(!out.contains('`') && !out.contains("::"), "{out}");
}
