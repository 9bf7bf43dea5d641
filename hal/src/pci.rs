//! The PCI resource-file backend: BAR0 mapped through sysfs
//! (`/sys/bus/pci/devices/<bdf>/resource0`) with `memmap2`, for hosts without
//! an IOMMU (or where VFIO is not wanted). Needs root (the files are mode
//! 0600) and no kernel driver bound to the card.
//!
//! Any file works, which is how the tests run it: a temporary file filled
//! with register values stands in for the BAR, and writes land in the file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::io::HalError;
use crate::mmio::MmioWindow;
use crate::regs::BAR_SIZE;
use crate::sysfs::{bound_driver, open_error};

/// Drivers that leave a card's BARs alone, so mapping `resourceN` beside them
/// is safe.
const HARMLESS_DRIVERS: &[&str] = &["pci-stub", "uio_pci_generic"];

/// BAR0 of one card, mapped from a PCI resource file (or any file standing in
/// for one).
#[derive(Debug)]
pub struct PciResourceCard {
    window: MmioWindow,
    name: String,
}

impl PciResourceCard {
    /// Map the resource file at `path` (e.g.
    /// `/sys/bus/pci/devices/0000:03:00.0/resource0`) shared and read-write.
    ///
    /// When the file sits in a sysfs device directory, refuses a device whose
    /// memory decoding is off (`enable` reads 0) or which a kernel driver
    /// owns.
    ///
    /// # Errors
    /// [`HalError::Open`] naming the device, the cause and the fix: missing
    /// file or device, no permission, not a regular file, BAR smaller than
    /// [`BAR_SIZE`], device disabled or owned by a driver, mmap refused.
    pub fn open(path: &Path) -> Result<PciResourceCard, HalError> {
        let name = format!("pci:{}", path.display());
        let file = open_resource(path, &name)?;
        let meta = file.metadata().map_err(|e| {
            open_error(
                &name,
                format!("cannot stat the resource file: {e}"),
                "check the path",
            )
        })?;
        if meta.is_dir() {
            return Err(open_error(
                &name,
                "is a directory, not a BAR resource file",
                format!(
                    "name the BAR's file inside it: pci:{}/resource0",
                    path.display()
                ),
            ));
        }
        let len = meta.len();
        if len < u64::from(BAR_SIZE) {
            return Err(bar_too_small(&name, len));
        }
        if let Some(dir) = path.parent() {
            check_sysfs_device(dir, &name)?;
        }
        let len = usize::try_from(len).map_err(|_| {
            open_error(
                &name,
                format!("BAR of {len} bytes does not fit the address space"),
                "use a 64-bit host",
            )
        })?;
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| mmap_failed(&name, path, &e))?;
        let window = MmioWindow::from_mmap(map)?;
        Ok(PciResourceCard { window, name })
    }

    /// The path-style name this card reports, `pci:<path>`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

crate::io::regio_by_window!(PciResourceCard, window);

fn open_resource(path: &Path, name: &str) -> Result<File, HalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| resource_open_error(name, path, &e))
}

/// Turn the error of opening a resource file read-write into a message.
/// Public inside the crate so tests can feed it errors this machine cannot
/// produce (tests run as root, so `EACCES` does not happen).
pub(crate) fn resource_open_error(name: &str, path: &Path, e: &io::Error) -> HalError {
    match e.kind() {
        io::ErrorKind::NotFound => {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.as_os_str().is_empty() || dir.is_dir() {
                open_error(
                    name,
                    "no such resource file: the device has no such BAR",
                    format!(
                        "BAR0 is `resource0`; list the BARs with `ls {}/resource*`",
                        dir.display()
                    ),
                )
            } else {
                open_error(
                    name,
                    format!("no such device: {} does not exist", dir.display()),
                    "find the card's address with `lspci -D`; after loading a bitstream, \
                     rescan with `echo 1 > /sys/bus/pci/rescan`",
                )
            }
        }
        io::ErrorKind::PermissionDenied => open_error(
            name,
            format!("permission denied opening it read-write ({e})"),
            "PCI resource files are root-only: run as root, or `chown <user> <file>` / a udev rule \
             for the card; under kernel lockdown (Secure Boot) even root cannot map them: use the \
             vfio: backend instead",
        ),
        _ if e.raw_os_error() == Some(21) => open_error(
            // EISDIR
            name,
            "is a directory, not a BAR resource file",
            format!("name the BAR's file inside it: pci:{}/resource0", path.display()),
        ),
        _ => open_error(
            name,
            format!("cannot open it read-write: {e}"),
            "check the path (pci:/sys/bus/pci/devices/<bdf>/resource0) and that it is a BAR file",
        ),
    }
}

fn bar_too_small(name: &str, len: u64) -> HalError {
    open_error(
        name,
        format!("BAR too small: {len} bytes, the card's register map needs {BAR_SIZE} (0x{BAR_SIZE:x})"),
        "this is not the card's BAR0: check the BDF (`lspci -D -v` shows each BAR's size) and that \
         the FPGA carries this tree's bitstream",
    )
}

/// When `dir` looks like a sysfs PCI device directory, check that memory
/// decoding is on and no kernel driver owns the device.
fn check_sysfs_device(dir: &Path, name: &str) -> Result<(), HalError> {
    let enable = dir.join("enable");
    if let Ok(text) = std::fs::read_to_string(&enable) {
        if text.trim() == "0" {
            return Err(open_error(
                name,
                "the device is disabled (memory decoding off): every register would read all ones",
                format!("echo 1 > {}", enable.display()),
            ));
        }
    }
    if let Some(driver) = bound_driver(dir) {
        if !HARMLESS_DRIVERS.contains(&driver.as_str()) {
            let bdf = dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let hint = if driver == "vfio-pci" {
                format!("the card is bound to vfio-pci: use --device vfio:{bdf}, or unbind it: ")
            } else {
                String::new()
            };
            return Err(open_error(
                name,
                format!("the device is owned by the kernel driver `{driver}`; two drivers on one card corrupt each other"),
                format!("{hint}echo {bdf} > {}", dir.join("driver/unbind").display()),
            ));
        }
    }
    Ok(())
}

fn mmap_failed(name: &str, path: &Path, e: &io::Error) -> HalError {
    let dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    open_error(
        name,
        format!("mmap refused: {e}"),
        format!(
            "the kernel blocks mapping BARs a driver has claimed (iomem=strict) and all BARs under \
             lockdown: unbind the driver (`echo <bdf> > {}/driver/unbind`) or use the vfio: backend; \
             an I/O-port BAR cannot be mapped at all",
            dir.display()
        ),
    )
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn permission_denied_names_file_cause_and_fix() {
        // Tests run as root, where EACCES cannot happen; check the message
        // built from the error the kernel would return.
        let p = Path::new("/sys/bus/pci/devices/0000:03:00.0/resource0");
        let e = resource_open_error(
            "pci:x",
            p,
            &io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let s = e.to_string();
        assert!(s.starts_with("pci:x: permission denied"), "{s}");
        assert!(s.contains("run as root"), "{s}");
        assert!(s.contains("udev"), "{s}");
        assert!(s.contains("vfio:"), "{s}");
    }

    #[test]
    fn too_small_message_gives_sizes() {
        let s = bar_too_small("pci:f", 4096).to_string();
        assert!(s.contains("BAR too small: 4096 bytes"), "{s}");
        assert!(s.contains("65536"), "{s}");
        assert!(s.contains("lspci"), "{s}");
    }
}
