//! Opening a real card from a device spec, for the CLIs and the daemon's
//! configuration: `vfio:<bdf>` or `pci:<path to resourceN>`.

use std::path::Path;

use crate::io::{HalError, RegIo};

/// Open the real-hardware backend a device spec names:
/// * `vfio:0000:03:00.0`: [`crate::vfio::VfioCard::open`] (Linux only);
/// * `pci:/sys/bus/pci/devices/0000:03:00.0/resource0`:
///   [`crate::pci::PciResourceCard::open`].
///
/// Returns `None` when the spec has neither prefix, so a caller can try its
/// other backends (`model`, `rtl`, ...).
///
/// # Errors
/// The backend's [`HalError::Open`], naming the device, the cause and the fix.
#[must_use]
pub fn open_spec(spec: &str) -> Option<Result<Box<dyn RegIo>, HalError>> {
    if let Some(bdf) = spec.strip_prefix("vfio:") {
        return Some(open_vfio(bdf));
    }
    let path = spec.strip_prefix("pci:")?;
    if path.is_empty() {
        return Some(Err(HalError::Open(
            "pci:: no path given\n  fix: --device pci:/sys/bus/pci/devices/<bdf>/resource0".into(),
        )));
    }
    Some(crate::pci::PciResourceCard::open(Path::new(path)).map(|c| Box::new(c) as Box<dyn RegIo>))
}

#[cfg(target_os = "linux")]
fn open_vfio(bdf: &str) -> Result<Box<dyn RegIo>, HalError> {
    crate::vfio::VfioCard::open(bdf).map(|c| Box::new(c) as Box<dyn RegIo>)
}

#[cfg(not(target_os = "linux"))]
fn open_vfio(bdf: &str) -> Result<Box<dyn RegIo>, HalError> {
    Err(HalError::Open(format!(
        "vfio:{bdf}: VFIO exists only on Linux\n  fix: run on a Linux host"
    )))
}
