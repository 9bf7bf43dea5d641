//! Device specifications: which card a tool or the daemon talks to.
//!
//! A `SPEC` is `KIND` or `KIND:ARG`:
//!
//! | spec | card |
//! |---|---|
//! | `model` | the reference model (`sim_bridge::model::ModelCard`), 1024 entries |
//! | `model:depth=N` | the reference model with `N` CAM entries |
//! | `verilator` | the RTL built by Verilator (needs the cargo feature `verilator`) |
//! | `vfio:BDF` | a real card through VFIO, e.g. `vfio:0000:03:00.0` (not supported yet) |
//! | `pci:PATH` | a real card through a PCI resource file (not supported yet) |
//! | `unix:PATH` | a card served over a Unix socket (not supported yet) |
//!
//! [`DeviceSpec::open`] gives the register backend, [`DeviceSpec::open_card`]
//! a probed [`driver::Card`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use driver::{Card, DriverError};
use hal::{HalError, RegIo};

/// The register backend every device opens to.
pub type DynRegs = Box<dyn RegIo>;

/// A parsed device specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The reference model with `depth` CAM entries.
    Model {
        /// CAM depth.
        depth: u32,
    },
    /// The Verilator-built RTL.
    Verilator,
    /// A card bound to `vfio-pci`, by PCI address.
    Vfio {
        /// PCI address (`domain:bus:device.function`).
        bdf: String,
    },
    /// A card through a PCI resource file (`.../resource0`).
    Pci {
        /// Path of the resource file.
        path: PathBuf,
    },
    /// A card served over a Unix socket.
    Unix {
        /// Socket path.
        path: PathBuf,
    },
}

/// What the `SPEC` grammar says, for error messages.
pub const SPEC_HELP: &str = "model, model:depth=N, verilator, vfio:BDF, pci:PATH or unix:PATH";

/// Why a device could not be named or opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The text is not a device specification.
    #[error("bad device spec {spec:?}: {reason} (expected {SPEC_HELP})")]
    BadSpec {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A backend this build or this version does not provide.
    #[error("device {spec}: {reason}")]
    Unsupported {
        /// The spec.
        spec: String,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The backend failed to open.
    #[error("device {spec}: {source}")]
    Open {
        /// The spec.
        spec: String,
        /// The backend's error.
        source: HalError,
    },
    /// The driver refused the card.
    #[error("device {spec}: {source}")]
    Probe {
        /// The spec.
        spec: String,
        /// The driver's error.
        source: DriverError,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let bad = |reason: &str| DeviceError::BadSpec {
            spec: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let need_arg = |what: &str| match arg {
            Some(a) if !a.is_empty() => Ok(a),
            _ => Err(bad(&format!("{kind} needs {what} after the colon"))),
        };
        match kind {
            "model" => match arg {
                None => Ok(Self::Model {
                    depth: sim_bridge::model::DEFAULT_DEPTH,
                }),
                Some(a) => {
                    let n = a
                        .strip_prefix("depth=")
                        .ok_or_else(|| bad("the model takes only depth=N"))?;
                    let depth: u32 = n.parse().map_err(|_| bad("depth must be a whole number"))?;
                    if depth == 0 || depth > sim_bridge::model::MAX_DEPTH {
                        return Err(bad(&format!(
                            "depth must be 1..={}",
                            sim_bridge::model::MAX_DEPTH
                        )));
                    }
                    Ok(Self::Model { depth })
                }
            },
            "verilator" => match arg {
                None => Ok(Self::Verilator),
                Some(_) => Err(bad("verilator takes no argument")),
            },
            "vfio" => Ok(Self::Vfio {
                bdf: need_arg("a PCI address such as 0000:03:00.0")?.to_owned(),
            }),
            "pci" => Ok(Self::Pci {
                path: need_arg("a resource file path")?.into(),
            }),
            "unix" => Ok(Self::Unix {
                path: need_arg("a socket path")?.into(),
            }),
            "" => Err(bad("empty")),
            other => Err(bad(&format!("unknown device kind {other:?}"))),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model { depth } if *depth == sim_bridge::model::DEFAULT_DEPTH => {
                f.write_str("model")
            }
            Self::Model { depth } => write!(f, "model:depth={depth}"),
            Self::Verilator => f.write_str("verilator"),
            Self::Vfio { bdf } => write!(f, "vfio:{bdf}"),
            Self::Pci { path } => write!(f, "pci:{}", path.display()),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

impl DeviceSpec {
    /// Whether the device is a simulation created by opening it (so probing,
    /// which resets the card, loses nothing).
    #[must_use]
    pub fn is_simulated(&self) -> bool {
        matches!(self, Self::Model { .. } | Self::Verilator)
    }

    /// Open the register backend.
    ///
    /// # Errors
    /// [`DeviceError::Unsupported`] for backends not built in or not written
    /// yet, [`DeviceError::Open`] when the backend fails.
    pub fn open(&self) -> Result<DynRegs, DeviceError> {
        let unsupported = |reason: &str| DeviceError::Unsupported {
            spec: self.to_string(),
            reason: reason.to_owned(),
        };
        match self {
            Self::Model { depth } => sim_bridge::model::ModelCard::with_depth(*depth)
                .map(|m| Box::new(m) as DynRegs)
                .map_err(|source| DeviceError::Open {
                    spec: self.to_string(),
                    source,
                }),
            Self::Verilator => open_verilator(self),
            Self::Vfio { .. } => Err(unsupported(
                "VFIO devices are not supported yet (a later issue adds them)",
            )),
            Self::Pci { .. } => Err(unsupported(
                "PCI resource files are not supported yet (a later issue adds them)",
            )),
            Self::Unix { .. } => Err(unsupported(
                "Unix-socket devices are not supported yet (a later issue adds them)",
            )),
        }
    }

    /// Open the device and probe it with the driver. A simulated card is
    /// probed with [`Card::probe`] (which resets it); a real one is attached
    /// with [`Card::attach`] (no reset, the entries it holds stay).
    ///
    /// # Errors
    /// As for [`DeviceSpec::open`], and [`DeviceError::Probe`] when the
    /// driver refuses the card.
    pub fn open_card(&self) -> Result<Card<DynRegs>, DeviceError> {
        let regs = self.open()?;
        let card = if self.is_simulated() {
            Card::probe(regs)
        } else {
            Card::attach(regs)
        };
        card.map_err(|source| DeviceError::Probe {
            spec: self.to_string(),
            source,
        })
    }
}

#[cfg(feature = "verilator")]
fn open_verilator(spec: &DeviceSpec) -> Result<DynRegs, DeviceError> {
    sim_bridge::verilator::RtlCard::new()
        .map(|c| Box::new(c) as DynRegs)
        .map_err(|source| DeviceError::Open {
            spec: spec.to_string(),
            source,
        })
}

#[cfg(not(feature = "verilator"))]
fn open_verilator(spec: &DeviceSpec) -> Result<DynRegs, DeviceError> {
    Err(DeviceError::Unsupported {
        spec: spec.to_string(),
        reason: "this build has no Verilator backend: rebuild with `--features verilator` \
                 (e.g. `cargo run -p host --features verilator --bin hwctl -- --device verilator status`; \
                 needs Verilator installed)"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            "model".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Model { depth: 1024 }
        );
        assert_eq!(
            "model:depth=64".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Model { depth: 64 }
        );
        assert_eq!(
            "verilator".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Verilator
        );
        assert_eq!(
            "vfio:0000:03:00.0".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Vfio {
                bdf: "0000:03:00.0".into()
            }
        );
        assert_eq!(
            "pci:/x/resource0".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Pci {
                path: "/x/resource0".into()
            }
        );
        assert_eq!(
            "unix:/run/card.sock".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Unix {
                path: "/run/card.sock".into()
            }
        );
        for s in [
            "model",
            "model:depth=64",
            "verilator",
            "vfio:0000:03:00.0",
            "unix:/a",
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_specs_clearly() {
        for s in [
            "",
            "modem",
            "model:64",
            "model:depth=0",
            "model:depth=x",
            "verilator:1",
            "vfio",
            "vfio:",
            "pci:",
        ] {
            let e = s.parse::<DeviceSpec>().unwrap_err();
            assert!(matches!(e, DeviceError::BadSpec { .. }), "{s}: {e}");
            assert!(e.to_string().contains("expected model"), "{e}");
        }
    }

    #[test]
    fn later_backends_say_not_supported_yet() {
        for s in [
            "vfio:0000:03:00.0",
            "pci:/sys/bus/pci/devices/0000:03:00.0/resource0",
            "unix:/tmp/x",
        ] {
            let e = s.parse::<DeviceSpec>().unwrap().open().err().unwrap();
            assert!(e.to_string().contains("not supported yet"), "{e}");
        }
    }

    #[test]
    fn opens_the_model() {
        let card = "model:depth=32"
            .parse::<DeviceSpec>()
            .unwrap()
            .open_card()
            .unwrap();
        assert_eq!(card.depth(), 32);
    }
}
