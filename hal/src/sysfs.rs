//! What the kernel says about a PCI device, read from sysfs: its address,
//! bound driver, IOMMU group and the other members of that group. Both
//! hardware backends use it to turn a failure into an error that names the
//! device, the cause and the fix.
//!
//! The roots (`/sys`, `/dev`) are injectable through [`HostPaths`] so tests
//! can build a fake tree in a temporary directory.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::io::HalError;

/// Where the host's sysfs and device nodes live. [`HostPaths::default`] is the
/// real system (`/sys`, `/dev`); tests point both into a temporary directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    /// The sysfs mount point, normally `/sys`.
    pub sysfs: PathBuf,
    /// The device-node directory, normally `/dev`.
    pub dev: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            sysfs: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

impl HostPaths {
    /// `root/sys` and `root/dev`: a whole fake host under one directory.
    #[must_use]
    pub fn under(root: &Path) -> HostPaths {
        HostPaths {
            sysfs: root.join("sys"),
            dev: root.join("dev"),
        }
    }

    /// `<sysfs>/bus/pci/devices/<bdf>`.
    #[must_use]
    pub fn pci_device(&self, bdf: &Bdf) -> PathBuf {
        self.sysfs.join("bus/pci/devices").join(bdf.as_str())
    }

    /// `<sysfs>/kernel/iommu_groups/<group>/devices`.
    #[must_use]
    pub fn iommu_group_devices(&self, group: u32) -> PathBuf {
        self.sysfs
            .join("kernel/iommu_groups")
            .join(group.to_string())
            .join("devices")
    }

    /// `<dev>/vfio`.
    #[must_use]
    pub fn vfio_dir(&self) -> PathBuf {
        self.dev.join("vfio")
    }
}

/// A PCI address in the kernel's canonical form `DDDD:BB:DD.F` (lower case).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bdf(String);

impl Bdf {
    /// Parse `0000:03:00.0` or the short form `03:00.0` (domain 0).
    ///
    /// # Errors
    /// [`HalError::Open`] naming the bad text and the expected form.
    pub fn parse(text: &str) -> Result<Bdf, HalError> {
        let bad = || {
            HalError::Open(format!(
                "vfio:{text}: '{text}' is not a PCI address\n  \
                 fix: give domain:bus:device.function as `lspci -D` prints it, e.g. vfio:0000:03:00.0"
            ))
        };
        let t = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = t.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [d, b, df] => (*d, *b, *df),
            [b, df] => ("0000", *b, *df),
            _ => return Err(bad()),
        };
        let (dev, func) = devfn.split_once('.').ok_or_else(bad)?;
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
        if !hex(domain, 4) || !hex(bus, 2) || !hex(dev, 2) || func.len() != 1 {
            return Err(bad());
        }
        let dev_n = u8::from_str_radix(dev, 16).map_err(|_| bad())?;
        let func_n = func.parse::<u8>().map_err(|_| bad())?;
        if dev_n > 0x1f || func_n > 7 {
            return Err(bad());
        }
        Ok(Bdf(format!("{domain}:{bus}:{dev}.{func}")))
    }

    /// The canonical text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Build the error every open failure turns into: `<device>: <cause>`, then
/// an indented `fix:` paragraph.
pub(crate) fn open_error(
    device: &str,
    cause: impl fmt::Display,
    fix: impl fmt::Display,
) -> HalError {
    HalError::Open(format!("{device}: {cause}\n  fix: {fix}"))
}

/// The name of the driver a sysfs device directory is bound to, if any.
#[must_use]
pub fn bound_driver(dev_dir: &Path) -> Option<String> {
    link_name(&dev_dir.join("driver"))
}

/// The IOMMU group a sysfs device directory belongs to, if the IOMMU is on.
#[must_use]
pub fn iommu_group(dev_dir: &Path) -> Option<u32> {
    link_name(&dev_dir.join("iommu_group"))?.parse().ok()
}

/// The PCI class code of a sysfs device directory (`0x060400` for a PCI
/// bridge).
#[must_use]
pub fn class_code(dev_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dev_dir.join("class")).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn link_name(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    target.file_name()?.to_str().map(str::to_owned)
}

/// One member of an IOMMU group, as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// Its PCI address (the directory name under `devices/`).
    pub bdf: String,
    /// The driver it is bound to, if any.
    pub driver: Option<String>,
    /// Whether it is a PCI bridge (class 0x0604xx): the kernel lets bridges
    /// keep their host driver (`pcieport`) inside a VFIO group.
    pub bridge: bool,
}

impl GroupMember {
    /// Whether this member lets the group be viable for VFIO: bound to
    /// `vfio-pci` (or `pci-stub`), to no driver, or a bridge.
    #[must_use]
    pub fn allows_vfio(&self) -> bool {
        self.bridge || matches!(self.driver.as_deref(), None | Some("vfio-pci" | "pci-stub"))
    }
}

impl fmt::Display for GroupMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let driver = self.driver.as_deref().unwrap_or("no driver");
        write!(
            f,
            "{} ({driver}{})",
            self.bdf,
            if self.bridge { ", bridge" } else { "" }
        )
    }
}

/// Every device of IOMMU group `group`, sorted by address.
///
/// # Errors
/// The I/O error of listing the group's `devices` directory.
pub fn group_members(paths: &HostPaths, group: u32) -> io::Result<Vec<GroupMember>> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir(paths.iommu_group_devices(group))? {
        let entry = entry?;
        let bdf = entry.file_name().to_string_lossy().into_owned();
        // Entries are symlinks to the device directories; follow them by
        // going through the PCI bus directory, which has the same names.
        let dir = paths.sysfs.join("bus/pci/devices").join(&bdf);
        let dir = if dir.exists() { dir } else { entry.path() };
        let bridge = class_code(&dir).is_some_and(|c| c >> 8 == 0x0604);
        members.push(GroupMember {
            bdf,
            driver: bound_driver(&dir),
            bridge,
        });
    }
    members.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    Ok(members)
}

/// The shell commands that bind `bdf` to `vfio-pci` (driver_override, unbind
/// from the current driver, reprobe), with paths under `paths.sysfs`.
#[must_use]
pub fn bind_commands(paths: &HostPaths, bdf: &str, current: Option<&str>) -> String {
    let sys = paths.sysfs.display();
    let mut s = String::from("modprobe vfio-pci\n");
    s.push_str(&format!(
        "    echo vfio-pci > {sys}/bus/pci/devices/{bdf}/driver_override\n"
    ));
    if current.is_some() {
        s.push_str(&format!(
            "    echo {bdf} > {sys}/bus/pci/devices/{bdf}/driver/unbind\n"
        ));
    }
    s.push_str(&format!("    echo {bdf} > {sys}/bus/pci/drivers_probe"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_parses_long_and_short_forms() {
        assert_eq!(Bdf::parse("0000:03:00.0").unwrap().as_str(), "0000:03:00.0");
        assert_eq!(Bdf::parse("03:00.1").unwrap().as_str(), "0000:03:00.1");
        assert_eq!(
            Bdf::parse(" 0001:AF:1f.7 ").unwrap().as_str(),
            "0001:af:1f.7"
        );
    }

    #[test]
    fn bdf_rejects_garbage_with_a_fix() {
        for bad in [
            "",
            "03:00",
            "0000:03:00.8",
            "0000:03:20.0",
            "zz:00.0",
            "0000:3:00.0",
            "a:b:c:d.0",
            "../../etc",
        ] {
            let e = Bdf::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a PCI address"), "{bad}: {e}");
            assert!(e.contains("lspci -D"), "{bad}: {e}");
        }
    }

    #[test]
    fn bind_commands_use_the_configured_sysfs_root() {
        let p = HostPaths::default();
        let s = bind_commands(&p, "0000:03:00.0", Some("ixgbe"));
        assert!(s.contains("echo vfio-pci > /sys/bus/pci/devices/0000:03:00.0/driver_override"));
        assert!(s.contains("echo 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind"));
        assert!(s.contains("echo 0000:03:00.0 > /sys/bus/pci/drivers_probe"));
        assert!(!bind_commands(&p, "0000:03:00.0", None).contains("unbind"));
    }

    #[test]
    fn group_member_viability_rule() {
        let m = |driver: Option<&str>, bridge| GroupMember {
            bdf: "0000:00:01.0".into(),
            driver: driver.map(str::to_owned),
            bridge,
        };
        assert!(m(Some("vfio-pci"), false).allows_vfio());
        assert!(m(None, false).allows_vfio());
        assert!(m(Some("pcieport"), true).allows_vfio());
        assert!(!m(Some("ixgbe"), false).allows_vfio());
        assert_eq!(m(Some("ixgbe"), false).to_string(), "0000:00:01.0 (ixgbe)");
    }
}
