//! The VFIO backend without a card: every bring-up failure produced from a
//! fake sysfs/dev tree (and the real host where it is safe), and the
//! sparse-mmap access path run over an ordinary file.
#![cfg(all(target_os = "linux", not(miri)))]

use std::fs;
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};

use hal::regs::BAR_SIZE;
use hal::sysfs::{Bdf, HostPaths};
use hal::vfio::{preflight, RegionPlan, SparseRegion, VfioCard, VfioConfig};
use hal::{BarOffset, HalError, RegIo};

const BDF: &str = "0000:03:00.0";

/// A fake host: a PCI device directory per call to [`Host::device`], IOMMU
/// groups, drivers and `/dev/vfio` nodes, all under a temporary directory.
struct Host {
    root: tempfile::TempDir,
}

/// Asserts that the message `msg` mentions every one of `parts`.
fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

/// A host with the card at [`BDF`] (bound to `driver`, in IOMMU `group`) and the
/// `/dev/vfio` nodes `nodes`, and the error of opening the card there.
fn card_open_err(driver: Option<&str>, group: Option<u32>, nodes: &[&str]) -> (Host, String) {
    let h = Host::new();
    h.device(BDF, 0x120000, driver, group).vfio_nodes(nodes);
    let msg = h.open_err(BDF);
    (h, msg)
}

impl Host {
    fn new() -> Host {
        let h = Host {
            root: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(h.sys().join("bus/pci/devices")).unwrap();
        h
    }
    fn paths(&self) -> HostPaths {
        HostPaths::under(self.root.path())
    }
    fn sys(&self) -> PathBuf {
        self.root.path().join("sys")
    }
    fn config(&self) -> VfioConfig {
        VfioConfig {
            paths: self.paths(),
            reset: true,
        }
    }
    /// A device with `class`, optionally bound to `driver` and in `group`.
    fn device(&self, bdf: &str, class: u32, driver: Option<&str>, group: Option<u32>) -> &Host {
        let dev = self.sys().join("bus/pci/devices").join(bdf);
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("class"), format!("0x{class:06x}\n")).unwrap();
        if let Some(d) = driver {
            let drv = self.sys().join("bus/pci/drivers").join(d);
            fs::create_dir_all(&drv).unwrap();
            symlink(&drv, dev.join("driver")).unwrap();
        }
        if let Some(g) = group {
            let gdir = self.sys().join("kernel/iommu_groups").join(g.to_string());
            fs::create_dir_all(gdir.join("devices")).unwrap();
            symlink(&gdir, dev.join("iommu_group")).unwrap();
            symlink(&dev, gdir.join("devices").join(bdf)).unwrap();
        }
        self
    }
    /// `/dev/vfio` with the container node and the given group nodes.
    fn vfio_nodes(&self, groups: &[&str]) -> &Host {
        let d = self.root.path().join("dev/vfio");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("vfio"), b"").unwrap();
        for g in groups {
            fs::write(d.join(g), b"").unwrap();
        }
        self
    }
    fn open_err(&self, bdf: &str) -> String {
        match VfioCard::open_with(bdf, &self.config()) {
            Ok(_) => panic!("{bdf} opened on a fake host"),
            Err(HalError::Open(msg)) => msg,
            Err(other) => panic!("expected HalError::Open, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_address_says_what_an_address_looks_like() {
    let msg = Host::new().open_err("03-00-0");
    assert!(
        msg.starts_with("vfio:03-00-0: '03-00-0' is not a PCI address"),
        "{msg}"
    );
    assert_mentions(&msg, &["vfio:0000:03:00.0"]);
}

#[test]
fn a_nonexistent_device_points_at_lspci() {
    let h = Host::new();
    h.vfio_nodes(&[]);
    let msg = h.open_err("0000:ff:1f.7");
    assert!(
        msg.starts_with("vfio:0000:ff:1f.7: no PCI device at 0000:ff:1f.7"),
        "{msg}"
    );
    assert_mentions(&msg, &["lspci -D", "rescan"]);
    // The short form names the same device.
    assert!(h
        .open_err("ff:1f.7")
        .starts_with("vfio:0000:ff:1f.7: no PCI device"));
}

#[test]
fn no_dev_vfio_means_modprobe() {
    let h = Host::new();
    h.device(BDF, 0x120000, Some("vfio-pci"), Some(5));
    let msg = h.open_err(BDF);
    assert!(msg.starts_with(&format!("vfio:{BDF}: ")), "{msg}");
    assert_mentions(
        &msg,
        &["the vfio-pci module is not loaded", "modprobe vfio-pci"],
    );
}

#[test]
fn no_iommu_group_means_kernel_command_line_or_pci_backend() {
    let (h, msg) = card_open_err(Some("ixgbe"), None, &[]);
    assert_mentions(
        &msg,
        &[
            "no IOMMU group",
            "intel_iommu=on",
            "amd_iommu=on",
            &format!(
                "--device pci:{}/bus/pci/devices/{BDF}/resource0",
                h.sys().display()
            ),
        ],
    );
}

#[test]
fn an_unbound_device_gets_the_bind_commands() {
    let (h, msg) = card_open_err(None, Some(5), &["5"]);
    let sys = h.sys();
    assert_mentions(
        &msg,
        &[
            "not bound to vfio-pci (it has no driver)",
            &format!(
                "echo vfio-pci > {}/bus/pci/devices/{BDF}/driver_override",
                sys.display()
            ),
            &format!("echo {BDF} > {}/bus/pci/drivers_probe", sys.display()),
        ],
    );
    assert!(!msg.contains("unbind"), "nothing to unbind: {msg}");
}

#[test]
fn a_device_with_another_driver_gets_unbind_and_bind_commands() {
    let (h, msg) = card_open_err(Some("xdma"), Some(5), &["5"]);
    assert_mentions(
        &msg,
        &[
            "not bound to vfio-pci (it has driver `xdma`)",
            "modprobe vfio-pci",
            &format!(
                "echo {BDF} > {}/bus/pci/devices/{BDF}/driver/unbind",
                h.sys().display()
            ),
        ],
    );
}

#[test]
fn a_group_shared_with_a_host_driver_is_not_viable_and_lists_the_members() {
    let h = Host::new();
    h.device(BDF, 0x120000, Some("vfio-pci"), Some(7))
        .device("0000:03:00.1", 0x020000, Some("ixgbe"), Some(7))
        .device("0000:00:1c.0", 0x060400, Some("pcieport"), Some(7))
        .vfio_nodes(&["7"]);
    let msg = h.open_err(BDF);
    assert_mentions(
        &msg,
        &[
            "IOMMU group 7 is not viable",
            "0000:00:1c.0 (pcieport, bridge)",
            "0000:03:00.0 (vfio-pci)",
            "0000:03:00.1 (ixgbe)",
        ],
    );
    // The fix binds exactly the blocking member.
    assert_mentions(&msg, &["echo 0000:03:00.1 > "]);
    assert!(
        !msg.contains("echo 0000:00:1c.0 > "),
        "the bridge may stay: {msg}"
    );
    assert_mentions(&msg, &["ACS"]);
}

#[test]
fn no_iommu_mode_points_at_the_pci_backend() {
    let (_, msg) = card_open_err(Some("vfio-pci"), Some(3), &["noiommu-3"]);
    assert_mentions(&msg, &["no-IOMMU mode", "--device pci:"]);
}

#[test]
fn a_missing_group_node_is_reported() {
    let (_, msg) = card_open_err(Some("vfio-pci"), Some(3), &[]);
    assert_mentions(
        &msg,
        &["/dev/vfio/3 does not exist although the device is bound to vfio-pci"],
    );
}

#[test]
fn a_ready_host_passes_preflight() {
    let h = Host::new();
    h.device(BDF, 0x120000, Some("vfio-pci"), Some(9))
        .device("0000:03:00.1", 0x120000, None, Some(9))
        .device("0000:00:1c.0", 0x060400, Some("pcieport"), Some(9))
        .vfio_nodes(&["9"]);
    let pre = preflight(&Bdf::parse(BDF).unwrap(), &h.paths()).unwrap();
    assert_eq!(pre.group, 9);
    assert!(pre.dev_dir.ends_with(format!("bus/pci/devices/{BDF}")));
}

#[test]
fn past_preflight_the_kernel_nodes_are_the_real_ones() {
    // The fake host is ready, so the open reaches vfio-ioctls, which opens
    // the real /dev/vfio/vfio. This machine has none: the error must say so
    // (with the real path) instead of panicking. Where a real /dev/vfio
    // exists the container opens and the fake group id fails later; either
    // way it is an error that names the device.
    let (_, msg) = card_open_err(Some("vfio-pci"), Some(424_242), &["424242"]);
    assert!(msg.starts_with(&format!("vfio:{BDF}: ")), "{msg}");
    assert_mentions(&msg, &["fix:"]);
    if !Path::new("/dev/vfio/vfio").exists() {
        assert_mentions(
            &msg,
            &["/dev/vfio/vfio does not exist", "modprobe vfio-pci"],
        );
    }
}

#[test]
fn a_real_device_of_this_host_without_dev_vfio() {
    // Read-only use of the real sysfs: the first PCI device there (if any),
    // with an empty fake /dev, so nothing is ever opened on the real device.
    let Some(first) = fs::read_dir("/sys/bus/pci/devices")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
    else {
        return; // no PCI bus visible (e.g. a container without /sys)
    };
    let bdf = first.file_name().to_string_lossy().into_owned();
    let fake_dev = tempfile::tempdir().unwrap();
    let config = VfioConfig {
        paths: HostPaths {
            sysfs: PathBuf::from("/sys"),
            dev: fake_dev.path().to_path_buf(),
        },
        reset: false,
    };
    let Err(HalError::Open(msg)) = VfioCard::open_with(&bdf, &config) else {
        panic!("opening {bdf} without /dev/vfio must fail");
    };
    assert!(msg.starts_with(&format!("vfio:{bdf}: ")), "{msg}");
    assert_mentions(&msg, &["modprobe vfio-pci"]);
}

#[test]
fn a_nonexistent_device_on_the_real_host() {
    let bdf = "0000:ff:1f.7";
    if Path::new("/sys/bus/pci/devices").join(bdf).exists() {
        return; // this host really has it; nothing to show
    }
    let Err(HalError::Open(msg)) = VfioCard::open(bdf) else {
        panic!("{bdf} must not open");
    };
    assert_mentions(&msg, &["no PCI device at 0000:ff:1f.7"]);
}

// ---- the sparse-mmap access path over an ordinary file ----

const RWM: u32 = 0x1 | 0x2 | 0x4; // VFIO_REGION_INFO_FLAG_{READ,WRITE,MMAP}

/// A file holding `lead` bytes of something else, then a BAR of words
/// `f(i)`: the shape of a VFIO device file, where BAR0 starts at its region
/// offset.
fn device_file(lead: u64, f: impl Fn(u32) -> u32) -> (tempfile::NamedTempFile, fs::File) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..BAR_SIZE / 4).flat_map(|i| f(i).to_le_bytes()).collect();
    tmp.as_file()
        .write_all_at(&vec![0xEE; lead as usize], 0)
        .unwrap();
    tmp.as_file().write_all_at(&bytes, lead).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    (tmp, file)
}

fn sparse_plan() -> RegionPlan {
    // Mapped: 0..0x2000 and 0x3000..BAR_SIZE; a hole at 0x2000..0x3000 (where
    // a card would put its MSI-X table) goes through pread/pwrite.
    let caps = vec![vfio_ioctls::VfioRegionInfoCap::SparseMmap(
        vfio_ioctls::VfioRegionInfoCapSparseMmap {
            areas: vec![
                vfio_ioctls::VfioRegionSparseMmapArea {
                    offset: 0,
                    size: 0x2000,
                },
                vfio_ioctls::VfioRegionSparseMmapArea {
                    offset: 0x3000,
                    size: u64::from(BAR_SIZE) - 0x3000,
                },
            ],
        },
    )];
    RegionPlan::new("vfio:test", RWM, u64::from(BAR_SIZE), &caps).unwrap()
}

#[test]
fn sparse_region_reads_mapped_and_unmapped_offsets_alike() {
    let lead = 0x4000;
    let (_tmp, file) = device_file(lead, |i| i ^ 0x5A5A_0000);
    let plan = sparse_plan();
    assert_eq!(plan.mmap.len(), 2);
    let mut bar = SparseRegion::map(file, lead, plan, "vfio:test").unwrap();
    assert_eq!(bar.size(), u64::from(BAR_SIZE));
    for i in 0..BAR_SIZE / 4 {
        assert_eq!(
            bar.read32(BarOffset(4 * i)).unwrap(),
            i ^ 0x5A5A_0000,
            "word {i}"
        );
    }
}

#[test]
fn sparse_region_writes_reach_the_file_through_both_paths() {
    let lead = 0x1000;
    let (tmp, file) = device_file(lead, |_| 0);
    let mut bar = SparseRegion::map(file, lead, sparse_plan(), "vfio:test").unwrap();
    // 0x1ffc: last mapped word of the first area; 0x2000 and 0x2ffc: inside
    // the hole (pwrite); 0x3000: first word of the second area.
    let cases = [
        (0x1ffc, 1u32),
        (0x2000, 2),
        (0x2ffc, 3),
        (0x3000, 4),
        (BAR_SIZE - 4, 5),
    ];
    for (off, v) in cases {
        bar.write32(BarOffset(off), v).unwrap();
    }
    let bytes = fs::read(tmp.path()).unwrap();
    for (off, v) in cases {
        let at = (lead + u64::from(off)) as usize;
        assert_eq!(&bytes[at..at + 4], &v.to_le_bytes(), "offset {off:#x}");
        assert_eq!(bar.read32(BarOffset(off)).unwrap(), v);
    }
    // The bytes before the region were not touched.
    assert!(bytes[..lead as usize].iter().all(|&b| b == 0xEE));
}

#[test]
fn sparse_region_checks_bounds_and_alignment_first() {
    let (_tmp, file) = device_file(0, |_| 0);
    let mut bar = SparseRegion::map(file, 0, sparse_plan(), "vfio:test").unwrap();
    hal::conformance::assert_bad_offsets_rejected(
        &mut bar,
        &[0x2002, 1],
        &[BAR_SIZE, u32::MAX - 3],
    );
}

#[test]
fn a_region_without_mmap_goes_entirely_through_pread_pwrite() {
    let (tmp, file) = device_file(0, |i| i);
    let plan = RegionPlan::new("vfio:test", 0x3, u64::from(BAR_SIZE), &[]).unwrap();
    assert!(plan.mmap.is_empty());
    let mut bar = SparseRegion::map(file, 0, plan, "vfio:test").unwrap();
    assert_eq!(bar.read32(BarOffset(0x40)).unwrap(), 0x10);
    bar.write32(BarOffset(0x40), 0xABCD).unwrap();
    assert_eq!(
        &fs::read(tmp.path()).unwrap()[0x40..0x44],
        &0xABCDu32.to_le_bytes()
    );
}

#[test]
fn a_failing_pread_is_a_bus_error_not_a_zero() {
    // The file is shorter than the region: the unmapped hole lies past its
    // end, so pread comes up short, as it would on a device that vanished.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(0x2000).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let mut bar = SparseRegion::map(file, 0, sparse_plan(), "vfio:test").unwrap();
    let e = bar.read32(BarOffset(0x2000)).unwrap_err();
    assert!(
        matches!(&e, HalError::Bus { offset, detail } if offset.0 == 0x2000 && detail.contains("pread")),
        "{e:?}"
    );
    assert!(e.to_string().contains("vfio:test"), "{e}");
}
