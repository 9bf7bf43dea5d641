//! Device specifications: which card a tool or the daemon talks to.
//!
//! A `SPEC` is `KIND` or `KIND:ARG`:
//!
//! | spec | card |
//! |---|---|
//! | `model` | the reference model (`sim_bridge::model::ModelCard`), 1024 entries |
//! | `model:depth=N` | the reference model with `N` CAM entries |
//! | `verilator` | the RTL built by Verilator (needs the cargo feature `verilator`) |
//! | `software` | no card: the host's ESP path on `ring` (`hwctl esp` only; it has no registers) |
//! | `vfio:BDF` | a real card bound to `vfio-pci`, e.g. `vfio:0000:03:00.0` (`hal::vfio`, without a device reset) |
//! | `pci:PATH` | a real card through a PCI resource file, e.g. `pci:/sys/bus/pci/devices/0000:03:00.0/resource0` ([`hal::hw::open_spec`]) |
//! | `unix:PATH` | a running `clusterd`'s control socket: its card is reached through the daemon, never opened here |
//!
//! [`DeviceSpec::open`] gives the register backend, [`DeviceSpec::open_card`]
//! a [`driver::Card`]: probed (reset) for a simulated card, attached (no
//! reset, the entries stay) for a real one, so that looking at a production
//! card never wipes it.

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
    /// No card: the host's software ESP path (`driver::esp::SoftwareEsp`).
    /// It has no registers and no CAM; only ESP commands use it.
    Software,
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
pub const SPEC_HELP: &str =
    "model, model:depth=N, verilator, software, vfio:BDF, pci:PATH or unix:PATH";

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
    /// The backend failed to open. (A real-hardware backend's message names
    /// the device, the cause and the fix itself.)
    #[error("{}", open_message(spec, source))]
    Open {
        /// The spec.
        spec: String,
        /// The backend's error.
        source: HalError,
    },
    /// The driver refused the card.
    #[error("device {spec}: {source}{}", probe_fix(spec, source))]
    Probe {
        /// The spec.
        spec: String,
        /// The driver's error.
        source: DriverError,
    },
    /// The card failed while in use (for example it left the bus: all-ones
    /// reads).
    #[error("device {spec}: {source}{}", probe_fix(spec, source))]
    Driver {
        /// The spec.
        spec: String,
        /// The driver's error.
        source: DriverError,
    },
}

fn open_message(spec: &str, source: &HalError) -> String {
    match source {
        // hal's real-hardware errors start with the device name already
        // (in its canonical form, e.g. vfio:0000:03:00.0 for vfio:03:00.0).
        HalError::Open(m)
            if m.starts_with(spec) || m.starts_with("vfio:") || m.starts_with("pci:") =>
        {
            m.clone()
        }
        other => format!("device {spec}: {other}"),
    }
}

fn probe_fix(spec: &str, source: &DriverError) -> String {
    if spec.starts_with("vfio:") || spec.starts_with("pci:") {
        let fix = match source {
            DriverError::WrongMagic { .. }
            | DriverError::UnknownBlock { .. }
            | DriverError::ChainLoop { .. }
            | DriverError::BadNextPointer { .. }
            | DriverError::MissingBlock { .. } => {
                "check that the spec names the state-offload card's BAR0 (resource0) \
                 and that the card's bitstream is loaded"
            }
            DriverError::UnsupportedVersion { .. } => {
                "update hwctl and the driver to a version that knows this card's register map"
            }
            DriverError::DeviceGone { .. } => {
                "the card left the bus: check power and link (lspci -vv), rescan or \
                 reboot, then reload the bitstream"
            }
            _ => {
                "check the card's power and link (lspci -vv), reload the bitstream, \
                 and see the bring-up guide in README.md"
            }
        };
        format!("\n  fix: {fix}")
    } else {
        String::new()
    }
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
            "software" => match arg {
                None => Ok(Self::Software),
                Some(_) => Err(bad("software takes no argument")),
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
            Self::Software => f.write_str("software"),
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

    /// Whether the device is reached through a running daemon's control
    /// socket (`unix:PATH`) rather than opened here.
    #[must_use]
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Unix { .. })
    }

    /// Open the register backend.
    ///
    /// # Errors
    /// [`DeviceError::Unsupported`] for backends not built in and for
    /// `unix:` (a daemon's card is reached through its control socket, see
    /// [`DeviceSpec::is_remote`]), [`DeviceError::Open`] when the backend
    /// fails (for real cards the message names the device, the cause and the
    /// fix).
    pub fn open(&self) -> Result<DynRegs, DeviceError> {
        match self {
            Self::Model { depth } => sim_bridge::model::ModelCard::with_depth(*depth)
                .map(|m| Box::new(m) as DynRegs)
                .map_err(|source| DeviceError::Open {
                    spec: self.to_string(),
                    source,
                }),
            Self::Verilator => open_verilator(self),
            Self::Software => Err(DeviceError::Unsupported {
                spec: self.to_string(),
                reason: "the software ESP path has no registers or CAM: it runs only \
                         `esp decrypt` and `esp encrypt`; use model, verilator or a real card \
                         for status, dump and regs"
                    .to_owned(),
            }),
            Self::Vfio { bdf } => open_vfio(self, bdf),
            Self::Pci { path } => {
                let spec = self.to_string();
                let regs = match hal::hw::open_spec(&spec) {
                    Some(r) => r.map_err(|source| DeviceError::Open {
                        spec: spec.clone(),
                        source,
                    })?,
                    None => {
                        return Err(DeviceError::Unsupported {
                            spec,
                            reason: "hal does not recognise this real-hardware spec".to_owned(),
                        })
                    }
                };
                Exclusive::lock(regs, path, &spec)
            }
            Self::Unix { path } => Err(DeviceError::Unsupported {
                spec: self.to_string(),
                reason: format!(
                    "a daemon's card is reached through its control socket, not opened as \
                     registers; is a clusterd running with control socket {}?",
                    path.display()
                ),
            }),
        }
    }

    /// A driver error met while using this device's card, as an error that
    /// names the device, the cause and (for real cards) the fix.
    #[must_use]
    pub fn driver_error(&self, source: DriverError) -> DeviceError {
        DeviceError::Driver {
            spec: self.to_string(),
            source,
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

/// A register backend that holds an exclusive advisory lock (`flock`) on
/// its device file while it lives. The kernel keeps a VFIO group to one
/// process; a PCI resource file can be mapped by any number, and two drivers
/// interleaving commands on one card corrupt each other's. Whoever opens a
/// `pci:` card through [`DeviceSpec::open`] (hwctl, and the daemon when it
/// drives real cards) takes this lock, so hwctl never pokes a card a running
/// node drives: it is told to use the node's control socket instead.
struct Exclusive {
    regs: DynRegs,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Exclusive {
    fn lock(regs: DynRegs, path: &std::path::Path, spec: &str) -> Result<DynRegs, DeviceError> {
        let open_err = |cause: String, fix: &str| DeviceError::Open {
            spec: spec.to_owned(),
            source: HalError::Open(format!("{spec}: {cause}\n  fix: {fix}")),
        };
        let file = std::fs::File::open(path).map_err(|e| {
            open_err(
                format!("cannot open the resource file to lock it: {e}"),
                "run as the user that may map the card (root for sysfs resource files)",
            )
        })?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Box::new(Exclusive { regs, _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(open_err(
                "the card is in use: another process holds its lock (a clusterd driving it, or \
                 another hwctl)"
                    .to_owned(),
                "look at a running node's card through its control socket \
                 (hwctl --device unix:PATH status|dump|regs|sas), or stop the other process \
                 (`fuser -v` on the resource file shows it)",
            )),
            Err((_, e)) => Err(open_err(
                format!("cannot lock the resource file: {e}"),
                "check the path; the lock keeps hwctl and clusterd from driving one card at once",
            )),
        }
    }
}

impl RegIo for Exclusive {
    fn read32(&mut self, offset: hal::BarOffset) -> Result<u32, HalError> {
        self.regs.read32(offset)
    }
    fn write32(&mut self, offset: hal::BarOffset, value: u32) -> Result<(), HalError> {
        self.regs.write32(offset, value)
    }
    fn size(&self) -> u64 {
        self.regs.size()
    }
    fn describe(&self) -> String {
        self.regs.describe()
    }
    fn idle(&mut self) {
        self.regs.idle();
    }
    fn wires(&mut self) -> Option<&mut dyn hal::Wires> {
        self.regs.wires()
    }
}

/// VFIO without `VFIO_DEVICE_RESET`: [`hal::hw::open_spec`] resets the
/// device (a function-level reset wipes the CAM and the SA table), which a
/// tool that only looks at a card in service must never do. The driver's
/// [`Card::attach`] then reads the card as it is.
#[cfg(target_os = "linux")]
fn open_vfio(spec: &DeviceSpec, bdf: &str) -> Result<DynRegs, DeviceError> {
    let config = hal::vfio::VfioConfig {
        reset: false,
        ..hal::vfio::VfioConfig::default()
    };
    hal::vfio::VfioCard::open_with(bdf, &config)
        .map(|c| Box::new(c) as DynRegs)
        .map_err(|source| DeviceError::Open {
            spec: spec.to_string(),
            source,
        })
}

#[cfg(not(target_os = "linux"))]
fn open_vfio(spec: &DeviceSpec, _bdf: &str) -> Result<DynRegs, DeviceError> {
    let spec_text = spec.to_string();
    match hal::hw::open_spec(&spec_text) {
        Some(r) => r.map_err(|source| DeviceError::Open {
            spec: spec_text,
            source,
        }),
        None => Err(DeviceError::Unsupported {
            spec: spec_text,
            reason: "VFIO exists only on Linux".to_owned(),
        }),
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
            "software",
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
            "software:1",
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
    fn real_cards_that_are_not_there_say_device_cause_and_fix() {
        for s in ["vfio:0000:99:00.0", "pci:/nonexistent/resource0"] {
            let e = s.parse::<DeviceSpec>().unwrap().open().err().unwrap();
            let m = e.to_string();
            assert!(matches!(e, DeviceError::Open { .. }), "{m}");
            assert!(m.starts_with(s), "names the device: {m}");
            assert!(m.contains("fix:"), "names the fix: {m}");
        }
        let e = "unix:/tmp/x"
            .parse::<DeviceSpec>()
            .unwrap()
            .open()
            .err()
            .unwrap();
        assert!(e.to_string().contains("control socket"), "{e}");
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
