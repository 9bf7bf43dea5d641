//! The VFIO backend: BAR0 of a card bound to `vfio-pci`, reached through
//! `/dev/vfio` with the `vfio-ioctls` crate, from an unprivileged process if
//! the group's device node allows it.
//!
//! [`VfioCard::open`] checks, in order, what the kernel needs and names the
//! fix for the first thing missing: the PCI device, `/dev/vfio` (the
//! `vfio-pci` module), the device's IOMMU group (the IOMMU), the binding to
//! `vfio-pci`, the group's viability (every other member bound to `vfio-pci`
//! or unbound), and the permissions of the device nodes. Then it opens the
//! container, group and device, checks BAR0's region flags, maps the parts of
//! BAR0 the kernel lets us map (honouring sparse-mmap areas) and resets the
//! device when it supports `VFIO_DEVICE_RESET`. Offsets outside every mapped
//! area go through `pread`/`pwrite` on the device file.
//!
//! MSI-X vectors can be routed to eventfds ([`VfioCard::enable_msix`]) for
//! command-completion interrupts.

// `unsafe` here: exactly one block, which borrows the device's file
// descriptor from `vfio-ioctls` (it only exposes `AsRawFd`) to duplicate it.
// See the crate docs for why `hal` may hold `unsafe` at all.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioError, VfioOps, VfioRegionInfoCap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::io::{check_access, BarOffset, HalError, RegIo};
use crate::mmio::MmioWindow;
use crate::regs::BAR_SIZE;
use crate::sysfs::{
    bind_commands, bound_driver, group_members, iommu_group, open_error, Bdf, HostPaths,
};

/// How [`VfioCard::open_with`] opens a card.
#[derive(Clone, Debug)]
pub struct VfioConfig {
    /// Where sysfs and `/dev` are (tests use a fake tree).
    pub paths: HostPaths,
    /// Issue `VFIO_DEVICE_RESET` after opening (when the device supports it).
    pub reset: bool,
}

impl Default for VfioConfig {
    fn default() -> Self {
        VfioConfig {
            paths: HostPaths::default(),
            reset: true,
        }
    }
}

/// How BAR0 is reached: the byte ranges that are memory-mapped; every other
/// offset below `size` goes through `pread`/`pwrite` on the device file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionPlan {
    /// Size of BAR0 in bytes.
    pub size: u64,
    /// Mapped ranges, sorted, disjoint, inside `0..size`.
    pub mmap: Vec<Range<u64>>,
}

impl RegionPlan {
    /// Work out how to reach a region from what `VFIO_DEVICE_GET_REGION_INFO`
    /// reported: its `flags`, `size` and capabilities.
    ///
    /// Without `VFIO_REGION_INFO_FLAG_MMAP` nothing is mapped; with a
    /// sparse-mmap capability only its areas are (clipped to the region,
    /// empty and overlapping ones dropped); otherwise the whole region is.
    ///
    /// # Errors
    /// [`HalError::Open`] for a region that is missing, not readable and
    /// writable, or smaller than [`BAR_SIZE`]; `device` names the card.
    pub fn new(
        device: &str,
        flags: u32,
        size: u64,
        caps: &[VfioRegionInfoCap],
    ) -> Result<RegionPlan, HalError> {
        if size == 0 {
            return Err(open_error(
                device,
                "VFIO reports no BAR0 on this device",
                "check that the FPGA is loaded with this tree's bitstream (`lspci -vv -s <bdf>` \
                 must show `Region 0: Memory at ...`)",
            ));
        }
        let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        if flags & rw != rw {
            return Err(open_error(
                device,
                format!(
                    "BAR0 is not readable and writable through VFIO (region flags 0x{flags:x})"
                ),
                "BAR0 must be a memory BAR; check the bitstream's PCIe configuration",
            ));
        }
        if size < u64::from(BAR_SIZE) {
            return Err(open_error(
                device,
                format!("BAR too small: BAR0 is {size} bytes, the card's register map needs {BAR_SIZE} (0x{BAR_SIZE:x})"),
                "this is not the card (or not function 0 of it): check the address with `lspci -D -v`, \
                 and that the FPGA carries this tree's bitstream",
            ));
        }
        if flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Ok(RegionPlan {
                size,
                mmap: Vec::new(),
            });
        }
        let sparse = caps.iter().find_map(|c| match c {
            VfioRegionInfoCap::SparseMmap(s) => Some(&s.areas),
            _ => None,
        });
        let Some(areas) = sparse else {
            return Ok(RegionPlan {
                size,
                mmap: std::iter::once(0..size).collect(),
            });
        };
        let mut ranges: Vec<Range<u64>> = areas
            .iter()
            .filter_map(|a| {
                let start = a.offset;
                let end = a.offset.checked_add(a.size)?.min(size);
                (start < end && start % 4 == 0).then_some(start..end & !3)
            })
            .filter(|r| !r.is_empty())
            .collect();
        ranges.sort_by_key(|r| r.start);
        let mut mmap: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if mmap.last().is_none_or(|last| last.end <= r.start) {
                mmap.push(r);
            }
        }
        Ok(RegionPlan { size, mmap })
    }

    /// The mapped range holding the 4 bytes at `off`, as an index into
    /// [`RegionPlan::mmap`].
    #[must_use]
    pub fn mapped(&self, off: u64) -> Option<usize> {
        self.mmap
            .iter()
            .position(|r| r.start <= off && off + 4 <= r.end)
    }
}

/// One MSI-X vector routed to an eventfd. Poll its file descriptor (e.g. with
/// tokio's `AsyncFd`) and call [`IrqEvent::take`] to consume the interrupts.
#[derive(Debug)]
pub struct IrqEvent {
    fd: EventFd,
}

impl IrqEvent {
    /// How many interrupts arrived since the last call (0 when none did).
    /// Never blocks.
    ///
    /// # Errors
    /// [`HalError::Bus`] when reading the eventfd fails.
    pub fn take(&self) -> Result<u64, HalError> {
        match self.fd.read() {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(HalError::Bus {
                offset: BarOffset(0),
                detail: format!("reading the MSI-X eventfd failed: {e}"),
            }),
        }
    }
}

impl AsRawFd for IrqEvent {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A card opened through VFIO: BAR0 mapped (where the kernel allows),
/// `pread`/`pwrite` for the rest.
pub struct VfioCard {
    // Field order is drop order: the mappings and our duplicate of the device
    // descriptor (in `bar`) must go before `device`, whose drop detaches the
    // group from the container (that fails with EBUSY while the device file
    // is in use).
    bar: SparseRegion,
    irqs: Vec<IrqEvent>,
    name: String,
    bdf: Bdf,
    device: VfioDevice,
    _container: Arc<VfioContainer>,
}

impl std::fmt::Debug for VfioCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioCard")
            .field("bdf", &self.bdf)
            .field("plan", &self.bar.plan)
            .field("msix", &self.irqs.len())
            .finish_non_exhaustive()
    }
}

impl VfioCard {
    /// Open the card at PCI address `bdf` (`0000:03:00.0` or `03:00.0`) on
    /// this host and reset it.
    ///
    /// # Errors
    /// [`HalError::Open`] naming the device, the cause and the fix; see the
    /// module docs for the checks, and `docs/bringup.md` for every message.
    pub fn open(bdf: &str) -> Result<VfioCard, HalError> {
        VfioCard::open_with(bdf, &VfioConfig::default())
    }

    /// [`VfioCard::open`] with explicit host paths and reset choice.
    ///
    /// # Errors
    /// As for [`VfioCard::open`].
    pub fn open_with(bdf: &str, config: &VfioConfig) -> Result<VfioCard, HalError> {
        let bdf = Bdf::parse(bdf)?;
        let name = format!("vfio:{bdf}");
        let paths = &config.paths;
        let pre = preflight(&bdf, paths)?;

        let container =
            VfioContainer::new(None).map_err(|e| map_vfio_error(&name, &bdf, paths, &pre, e))?;
        let container = Arc::new(container);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(&pre.dev_dir, ops, false)
            .map_err(|e| map_vfio_error(&name, &bdf, paths, &pre, e))?;

        let index = VFIO_PCI_BAR0_REGION_INDEX;
        let plan = RegionPlan::new(
            &name,
            device.get_region_flags(index),
            device.get_region_size(index),
            &device.get_region_caps(index),
        )?;
        let region_offset = device.get_region_offset(index);

        // SAFETY: `device.as_raw_fd()` is the open descriptor owned by
        // `device`, which is alive for this whole statement; the borrow ends
        // when `try_clone_to_owned` has duplicated it into a descriptor we
        // own.
        let dup = unsafe { BorrowedFd::borrow_raw(device.as_raw_fd()) }.try_clone_to_owned();
        let file = File::from(dup.map_err(|e| {
            open_error(
                &name,
                format!("cannot duplicate the VFIO device descriptor: {e}"),
                "raise `ulimit -n`",
            )
        })?);

        // Reset before mapping, so nothing of the old state is read through
        // the new mappings (vfio-pci restores config space, including memory
        // decoding, after the reset).
        if config.reset {
            device.reset();
        }

        let bar = SparseRegion::map(file, region_offset, plan, &name)?;

        Ok(VfioCard {
            bar,
            irqs: Vec::new(),
            name,
            bdf,
            device,
            _container: container,
        })
    }

    /// The card's PCI address.
    #[must_use]
    pub fn bdf(&self) -> &Bdf {
        &self.bdf
    }

    /// How BAR0 is reached (mapped ranges; the rest by `pread`/`pwrite`).
    #[must_use]
    pub fn region_plan(&self) -> &RegionPlan {
        &self.bar.plan
    }

    /// Number of MSI-X vectors the device offers (0 when it has none).
    #[must_use]
    pub fn msix_vectors(&self) -> u32 {
        self.device
            .get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
            .filter(|i| i.flags & VFIO_IRQ_INFO_EVENTFD != 0)
            .map_or(0, |i| i.count)
    }

    /// Route the first `count` MSI-X vectors to fresh non-blocking eventfds
    /// and return them (vector `i` is element `i`). Replaces any earlier
    /// routing.
    ///
    /// # Errors
    /// [`HalError::Open`] when the device offers fewer vectors or the kernel
    /// refuses.
    pub fn enable_msix(&mut self, count: u32) -> Result<Vec<IrqEvent>, HalError> {
        let have = self.msix_vectors();
        if count == 0 || count > have {
            return Err(open_error(
                &self.name,
                format!("asked for {count} MSI-X vectors, the device offers {have}"),
                "ask for between 1 and the number the bitstream's MSI-X capability declares",
            ));
        }
        let fds = (0..count)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(|fd| IrqEvent { fd }))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| {
                open_error(
                    &self.name,
                    format!("cannot create an eventfd: {e}"),
                    "raise `ulimit -n`",
                )
            })?;
        self.device
            .enable_msix(fds.iter().map(|i| &i.fd).collect())
            .map_err(|e| {
                open_error(
                    &self.name,
                    format!("enabling MSI-X failed: {e}"),
                    "check `dmesg`",
                )
            })?;
        // Keep our own clones so the kernel's references stay valid even if
        // the caller drops theirs.
        self.irqs = fds
            .iter()
            .map(|i| i.fd.try_clone().map(|fd| IrqEvent { fd }))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| {
                open_error(
                    &self.name,
                    format!("cannot duplicate an eventfd: {e}"),
                    "raise `ulimit -n`",
                )
            })?;
        Ok(fds)
    }

    /// Stop routing MSI-X interrupts.
    ///
    /// # Errors
    /// [`HalError::Open`] when the kernel refuses.
    pub fn disable_msix(&mut self) -> Result<(), HalError> {
        if self.irqs.is_empty() {
            return Ok(());
        }
        self.device.disable_msix().map_err(|e| {
            open_error(
                &self.name,
                format!("disabling MSI-X failed: {e}"),
                "check `dmesg`",
            )
        })?;
        self.irqs.clear();
        Ok(())
    }
}

crate::io::regio_by_window!(VfioCard, bar);

/// A region of a file reached as a [`RegionPlan`] says: the planned ranges
/// memory-mapped (volatile access), everything else by `pread`/`pwrite` at
/// `region_offset + offset`.
///
/// [`VfioCard`] keeps BAR0 in one of these over the VFIO device file; because
/// it takes any [`File`], tests run the same code over an ordinary file.
#[derive(Debug)]
pub struct SparseRegion {
    windows: Vec<MmioWindow>,
    file: File,
    region_offset: u64,
    plan: RegionPlan,
    name: String,
}

impl SparseRegion {
    /// Map the ranges of `plan` from `file`, region `i`'s byte `o` being the
    /// file's byte `region_offset + o`. `region_offset + range.start` must be
    /// page aligned for every mapped range (VFIO guarantees it for its
    /// region offsets and sparse areas).
    ///
    /// # Errors
    /// [`HalError::Open`] when a mapping is refused.
    pub fn map(
        file: File,
        region_offset: u64,
        plan: RegionPlan,
        name: &str,
    ) -> Result<SparseRegion, HalError> {
        let mut windows = Vec::with_capacity(plan.mmap.len());
        for r in &plan.mmap {
            let len = usize::try_from(r.end - r.start).unwrap_or(usize::MAX);
            let map = memmap2::MmapOptions::new()
                .offset(region_offset + r.start)
                .len(len)
                .map_raw(&file)
                .map_err(|e| {
                    open_error(
                        name,
                        format!(
                            "mmap of BAR0 bytes 0x{:x}..0x{:x} refused: {e}",
                            r.start, r.end
                        ),
                        "check `dmesg` for vfio-pci messages; the BAR must be a memory BAR",
                    )
                })?;
            windows.push(MmioWindow::from_mmap(map)?);
        }
        Ok(SparseRegion {
            windows,
            file,
            region_offset,
            plan,
            name: name.to_owned(),
        })
    }

    /// How the region is reached.
    #[must_use]
    pub fn plan(&self) -> &RegionPlan {
        &self.plan
    }

    fn bus_error(&self, offset: BarOffset, what: &str, e: &io::Error) -> HalError {
        HalError::Bus {
            offset,
            detail: format!("{}: {what} failed: {e}", self.name),
        }
    }
}

impl RegIo for SparseRegion {
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
        let off = check_access(offset, self.plan.size)? as u64;
        if let Some(i) = self.plan.mapped(off) {
            let rel = BarOffset((off - self.plan.mmap[i].start) as u32);
            return self.windows[i].read32(rel);
        }
        let mut buf = [0u8; 4];
        self.file
            .read_exact_at(&mut buf, self.region_offset + off)
            .map_err(|e| self.bus_error(offset, "pread", &e))?;
        Ok(u32::from_le_bytes(buf))
    }

    fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
        let off = check_access(offset, self.plan.size)? as u64;
        if let Some(i) = self.plan.mapped(off) {
            let rel = BarOffset((off - self.plan.mmap[i].start) as u32);
            return self.windows[i].write32(rel, value);
        }
        self.file
            .write_all_at(&value.to_le_bytes(), self.region_offset + off)
            .map_err(|e| self.bus_error(offset, "pwrite", &e))
    }

    fn size(&self) -> u64 {
        self.plan.size
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// What the sysfs checks found out about a device that passed them.
#[derive(Clone, Debug)]
pub struct Preflight {
    /// `<sysfs>/bus/pci/devices/<bdf>`.
    pub dev_dir: PathBuf,
    /// Its IOMMU group.
    pub group: u32,
}

/// Check, against `paths`, everything the kernel needs before a VFIO open
/// can work, in the order a bring-up meets them. Opens (and closes again) the
/// container and group device nodes to check their permissions.
///
/// # Errors
/// [`HalError::Open`] for the first problem found, naming the device, the
/// cause and the fix.
pub fn preflight(bdf: &Bdf, paths: &HostPaths) -> Result<Preflight, HalError> {
    let name = format!("vfio:{bdf}");
    let dev_dir = paths.pci_device(bdf);
    require_dir(
        &name,
        &dev_dir,
        format!(
            "no PCI device at {bdf} ({} does not exist)",
            dev_dir.display()
        ),
        format!(
            "find the card's address with `lspci -D`; after loading a bitstream, rescan with \
             `echo 1 > {}/bus/pci/rescan`",
            paths.sysfs.display()
        ),
    )?;
    let vfio_dir = paths.vfio_dir();
    require_dir(
        &name,
        &vfio_dir,
        format!(
            "{} does not exist: the vfio-pci module is not loaded",
            vfio_dir.display()
        ),
        "`modprobe vfio-pci` (and list it in /etc/modules-load.d/ to keep it across boots); \
         VFIO also needs the IOMMU on, see docs/bringup.md",
    )?;
    let Some(group) = iommu_group(&dev_dir) else {
        return Err(open_error(
            &name,
            "the device has no IOMMU group: the IOMMU is off or absent",
            format!(
                "enable VT-d / AMD-Vi in the firmware and boot with `intel_iommu=on iommu=pt` \
                 (Intel) or `amd_iommu=on iommu=pt` (AMD) on the kernel command line; on a host \
                 without an IOMMU use --device pci:{}/resource0 instead",
                dev_dir.display()
            ),
        ));
    };
    let driver = bound_driver(&dev_dir);
    if driver.as_deref() != Some("vfio-pci") {
        let now = driver
            .as_deref()
            .map_or("no driver".to_owned(), |d| format!("driver `{d}`"));
        return Err(open_error(
            &name,
            format!("the device is not bound to vfio-pci (it has {now})"),
            format!(
                "bind it to vfio-pci as root:\n    {}",
                bind_commands(paths, bdf.as_str(), driver.as_deref())
            ),
        ));
    }
    let members = group_members(paths, group).unwrap_or_default();
    let blocking: Vec<_> = members
        .iter()
        .filter(|m| m.bdf != bdf.as_str() && !m.allows_vfio())
        .collect();
    if !blocking.is_empty() {
        return Err(group_not_viable(&name, paths, group, &members));
    }
    check_node(&name, &vfio_dir.join("vfio"), None)?;
    let group_node = vfio_dir.join(group.to_string());
    if !group_node.exists() && vfio_dir.join(format!("noiommu-{group}")).exists() {
        return Err(open_error(
            &name,
            format!(
                "VFIO runs in no-IOMMU mode (only {}/noiommu-{group} exists)",
                vfio_dir.display()
            ),
            format!(
                "the vfio backend needs a real IOMMU; without one use --device pci:{}/resource0",
                dev_dir.display()
            ),
        ));
    }
    check_node(&name, &group_node, Some(group))?;
    Ok(Preflight { dev_dir, group })
}

/// `Ok` when `dir` is a directory, else the open error of `name` with `cause` and `fix`.
fn require_dir(
    name: &str,
    dir: &Path,
    cause: impl std::fmt::Display,
    fix: impl std::fmt::Display,
) -> Result<(), HalError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(open_error(name, cause, fix))
    }
}

/// Open a VFIO device node read-write and close it again, to turn a
/// permission problem into a clear error before `vfio-ioctls` meets it.
fn check_node(name: &str, path: &Path, group: Option<u32>) -> Result<(), HalError> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(node_open_error(name, path, group, &e)),
    }
}

/// The error for a failed open of `/dev/vfio/vfio` (`group` is `None`) or
/// `/dev/vfio/<group>`. Separate so tests can feed it errors this machine
/// cannot produce (tests run as root, so `EACCES` does not happen).
pub(crate) fn node_open_error(
    name: &str,
    path: &Path,
    group: Option<u32>,
    e: &io::Error,
) -> HalError {
    let p = path.display();
    match (e.kind(), group) {
        (io::ErrorKind::NotFound, None) => open_error(
            name,
            format!("{p} does not exist: the vfio-pci module is not loaded"),
            "`modprobe vfio-pci`",
        ),
        (io::ErrorKind::NotFound, Some(g)) => open_error(
            name,
            format!("{p} does not exist although the device is bound to vfio-pci"),
            format!(
                "check `ls -l {}` and `dmesg`; udev may not have created group {g}'s node yet",
                path.parent().unwrap_or(path).display()
            ),
        ),
        (io::ErrorKind::PermissionDenied, _) => open_error(
            name,
            format!("no permission to open {p} read-write ({e})"),
            format!(
                "run as root, or give your user the node: `chown <user> {p}`, or for good a udev \
                 rule such as\n    SUBSYSTEM==\"vfio\", GROUP=\"fpga\", MODE=\"0660\"\n  \
                 in /etc/udev/rules.d/90-vfio-fpga.rules (then `udevadm trigger`); DMA later also \
                 needs `ulimit -l` large enough"
            ),
        ),
        _ if e.raw_os_error() == Some(16) => open_error(
            // EBUSY
            name,
            format!(
                "{p} is busy: another process (a clusterd, another hwctl, a VM) holds the card"
            ),
            format!("find it with `fuser -v {p}` and stop it"),
        ),
        _ => open_error(
            name,
            format!("cannot open {p}: {e}"),
            "check `dmesg` for vfio messages",
        ),
    }
}

fn group_not_viable(
    name: &str,
    paths: &HostPaths,
    group: u32,
    members: &[crate::sysfs::GroupMember],
) -> HalError {
    let list: Vec<String> = members.iter().map(ToString::to_string).collect();
    let devices = if list.is_empty() {
        "unknown".to_owned()
    } else {
        list.join(", ")
    };
    let mut fix = String::from(
        "every device in the group must be bound to vfio-pci (or to no driver); as root, for each \
         one marked above with a host driver:",
    );
    for m in members.iter().filter(|m| !m.allows_vfio()) {
        fix.push_str("\n    ");
        fix.push_str(&bind_commands(paths, &m.bdf, m.driver.as_deref()));
    }
    fix.push_str("\n  or move the card to a slot with its own IOMMU group (ACS)");
    open_error(
        name,
        format!("IOMMU group {group} is not viable: its devices are {devices}"),
        fix,
    )
}

fn map_vfio_error(
    name: &str,
    bdf: &Bdf,
    paths: &HostPaths,
    pre: &Preflight,
    e: VfioError,
) -> HalError {
    match e {
        // vfio-ioctls opens these at their fixed places, whatever `paths` says.
        VfioError::OpenContainer(io) => node_open_error(name, Path::new("/dev/vfio/vfio"), None, &io),
        VfioError::OpenGroup(io, id) => {
            node_open_error(name, &Path::new("/dev/vfio").join(id), Some(pre.group), &io)
        }
        VfioError::GroupViable => {
            let members = group_members(paths, pre.group).unwrap_or_default();
            group_not_viable(name, paths, pre.group, &members)
        }
        VfioError::VfioApiVersion | VfioError::VfioExtension | VfioError::VfioType1V2 => open_error(
            name,
            format!("the kernel's VFIO does not offer the type1 v2 IOMMU ({e})"),
            "use a kernel with VFIO_IOMMU_TYPE1 (any distribution kernel since 3.x) and the IOMMU on",
        ),
        VfioError::GroupGetDeviceFD(errno) => open_error(
            name,
            format!("the kernel refused the device descriptor for {bdf}: {errno}"),
            format!(
                "another process may have the device open (`fuser -v {}/{}`), or it was reset or \
                 removed; check `dmesg`",
                paths.vfio_dir().display(),
                pre.group
            ),
        ),
        other => open_error(name, format!("VFIO open failed: {other}"), "check `dmesg` for vfio-pci messages"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_ioctls::{VfioRegionInfoCapSparseMmap, VfioRegionSparseMmapArea};

    const RW: u32 = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    const RWM: u32 = RW | VFIO_REGION_INFO_FLAG_MMAP;
    const SZ: u64 = BAR_SIZE as u64;

    fn sparse(areas: &[(u64, u64)]) -> Vec<VfioRegionInfoCap> {
        vec![VfioRegionInfoCap::SparseMmap(VfioRegionInfoCapSparseMmap {
            areas: areas
                .iter()
                .map(|&(offset, size)| VfioRegionSparseMmapArea { offset, size })
                .collect(),
        })]
    }

    #[test]
    fn mmap_flag_maps_the_whole_region() {
        let p = RegionPlan::new("vfio:x", RWM, SZ, &[]).unwrap();
        assert_eq!(p.mmap, vec![0..SZ]);
        assert_eq!(p.mapped(0), Some(0));
        assert_eq!(p.mapped(SZ - 4), Some(0));
    }

    #[test]
    fn no_mmap_flag_means_pread_pwrite_everywhere() {
        let p = RegionPlan::new("vfio:x", RW, SZ, &[]).unwrap();
        assert!(p.mmap.is_empty());
        assert_eq!(p.mapped(0), None);
    }

    #[test]
    fn sparse_areas_are_honoured_clipped_and_sorted() {
        // A hole at 0x2000..0x3000 (e.g. an MSI-X table), an empty area, an
        // area running past the end and one overlapping its predecessor.
        let caps = sparse(&[
            (0x3000, 0x20000),
            (0, 0x2000),
            (0x8000, 0),
            (0x1000, 0x1000),
        ]);
        let p = RegionPlan::new("vfio:x", RWM, SZ, &caps).unwrap();
        assert_eq!(p.mmap, vec![0..0x2000, 0x3000..SZ]);
        assert_eq!(p.mapped(0x1ffc), Some(0));
        assert_eq!(p.mapped(0x2000), None);
        assert_eq!(p.mapped(0x2ffc), None);
        assert_eq!(p.mapped(0x3000), Some(1));
    }

    #[test]
    fn sparse_cap_without_mmap_flag_maps_nothing() {
        let p = RegionPlan::new("vfio:x", RW, SZ, &sparse(&[(0, SZ)])).unwrap();
        assert!(p.mmap.is_empty());
    }

    #[test]
    fn region_failures_name_device_cause_and_fix() {
        let e = RegionPlan::new("vfio:0000:03:00.0", RWM, 0x1000, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("vfio:0000:03:00.0: BAR too small: BAR0 is 4096 bytes"),
            "{e}"
        );
        assert!(e.contains("fix:"), "{e}");
        let e = RegionPlan::new("vfio:0000:03:00.0", VFIO_REGION_INFO_FLAG_READ, SZ, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not readable and writable"), "{e}");
        let e = RegionPlan::new("vfio:0000:03:00.0", 0, 0, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no BAR0"), "{e}");
    }

    #[test]
    fn permission_and_busy_messages() {
        // Tests run as root, where EACCES cannot be produced; check the
        // message for the error the kernel returns to an unprivileged user.
        let p = Path::new("/dev/vfio/12");
        let e = node_open_error(
            "vfio:0000:03:00.0",
            p,
            Some(12),
            &io::Error::from(io::ErrorKind::PermissionDenied),
        )
        .to_string();
        assert!(
            e.starts_with("vfio:0000:03:00.0: no permission to open /dev/vfio/12"),
            "{e}"
        );
        assert!(e.contains("chown <user> /dev/vfio/12"), "{e}");
        assert!(e.contains("SUBSYSTEM==\"vfio\""), "{e}");
        assert!(e.contains("run as root"), "{e}");
        let e = node_open_error(
            "vfio:0000:03:00.0",
            p,
            Some(12),
            &io::Error::from_raw_os_error(16),
        )
        .to_string();
        assert!(
            e.contains("busy") && e.contains("fuser -v /dev/vfio/12"),
            "{e}"
        );
    }
}
