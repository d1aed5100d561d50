//! Loading, attaching, pinning and detaching the XDP program.
//!
//! Layout of a pin directory (default `/sys/fs/bpf/tandem`, one per node):
//! - the maps (`lb_common::ALL_MAPS`), pinned by name. A later load with the same directory
//!   reuses them, so counters, tables and the connection table survive a reload; a pinned map
//!   whose layout differs from this build's (an older version's) is replaced, with a warning;
//!   a map an older version did not have (TRACE) is created beside the reused ones.
//! - `tandem_xdp`: the program most recently loaded.
//! - `link_<interface>`: one bpf_link per interface the program is attached to. The link, not
//!   the process, keeps the program attached: removing the pin detaches it. A new load swaps
//!   the program inside the existing link (one atomic BPF_LINK_UPDATE), so not one packet
//!   meets an interface without the program during a daemon restart or upgrade.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use aya::programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, Xdp, XdpMode};
pub use aya::Ebpf;
use aya::EbpfLoader;
use lb_common::{MapKind, MapLayout, ALL_MAPS, MAP_LAYOUTS, PROGRAM_NAME, PROGRAM_PIN, TRACE_MAP};
use tracing::{info, warn};

use super::link::{self, AttachedMode};
use crate::capabilities::{self, Capability};

/// Where bpffs is mounted on a standard system; mounted on demand when a pin directory is below it.
const STANDARD_BPFFS: &str = "/sys/fs/bpf";
/// `statfs(2)` f_type of a bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const LINK_PIN_PREFIX: &str = "link_";
/// Maps that a pin directory left by an older version lacks and that hold no state (no flows,
/// no numbering): the load creates them, and the directory's other maps still count as
/// reused, so an upgrade keeps its flows and the backends' ids.
const ADDED_LATER: [&str; 1] = [TRACE_MAP];

/// The XDP object built by `cargo xtask build-ebpf`, when this binary was built with it.
pub fn embedded_object() -> Option<&'static [u8]> {
    #[cfg(tandem_ebpf)]
    {
        static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TANDEM_EBPF_OBJECT"));
        Some(OBJECT)
    }
    #[cfg(not(tandem_ebpf))]
    {
        None
    }
}

/// How to attach: the driver's own hook (native), the generic hook in the stack (generic, works
/// on every interface, slower), or native when the driver supports it and generic otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Auto,
    Native,
    Generic,
}

/// What `attach` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub interface: String,
    pub mode: AttachedMode,
    pub program_id: u32,
    pub pin_dir: PathBuf,
    /// True when the directory already held maps, which this load reused.
    pub reused_maps: bool,
}

/// Why the XDP program could not be loaded, attached or detached. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(
        "this tandem binary was built without the XDP program: build it with `cargo xtask build`"
    )]
    NoObject,
    #[error("interface `{0}` does not exist in this network namespace: check `ip link` (or run tandem inside the node's namespace)")]
    NoSuchInterface(String),
    #[error("{} is not on a bpffs: mount one with `mount -t bpf bpf {STANDARD_BPFFS}`, or choose a pin directory on a mounted bpffs (--pin-dir, or node.bpf_pin_dir in the config)", .0.display())]
    NotBpffs(PathBuf),
    #[error("{0} was refused (permission denied): run as root, or give tandem CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON")]
    PermissionDenied(String),
    #[error("no Tandem XDP program is attached to `{interface}` through {}: nothing to detach (`tandem maps --pin-dir DIR` shows what is loaded)", .pin_dir.display())]
    NotAttached { interface: String, pin_dir: PathBuf },
    #[error("no Tandem maps in {}: load the XDP program first (`tandem run` with dataplane = \"xdp\", or `cargo xtask build-and-load --iface IF`)", .0.display())]
    NoMaps(PathBuf),
    #[error("no TRACE map in {}: the XDP program loaded there predates tracing; restart the daemon (`tandem run`) with this tandem version to load one that has it", .0.display())]
    NoTraceMap(PathBuf),
    #[error("another `tandem trace` is running; tracing is {0}: wait for it to end, or stop it (Ctrl-C)")]
    TraceRunning(String),
    #[error("another process took the TRACE switch over (tracing is now {0}); this trace stops")]
    TraceLost(String),
    #[error("{what}: {detail}")]
    Kernel { what: String, detail: String },
}

impl XdpError {
    /// Classifies an error from aya or the kernel: permission problems get their own message,
    /// everything else keeps the whole chain of causes.
    pub(crate) fn from_kernel(
        what: impl Into<String>,
        error: &(dyn std::error::Error + 'static),
    ) -> Self {
        let what = what.into();
        let mut detail = error.to_string();
        let mut source = error.source();
        let mut permission = false;
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                // EPERM is a missing capability. The verifier answers EACCES for a program it
                // rejects, which is a bug in the program, unless CAP_PERFMON is missing: then
                // it refuses what only a perfmon-capable loader may do with the same EACCES
                // ("pointer arithmetic with it prohibited for !root": our packet offsets).
                permission |= match io.raw_os_error() {
                    Some(libc::EPERM) => true,
                    Some(libc::EACCES) => !capabilities::has(Capability::Perfmon),
                    _ => false,
                };
            }
            current = e.source();
        }
        while let Some(e) = source {
            detail.push_str(": ");
            detail.push_str(&e.to_string());
            source = e.source();
        }
        if permission {
            XdpError::PermissionDenied(what)
        } else {
            XdpError::Kernel { what, detail }
        }
    }
}

fn link_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PIN_PREFIX}{interface}"))
}

/// Interfaces that have a pinned Tandem link in `pin_dir`.
pub fn attached_interfaces(pin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_prefix(LINK_PIN_PREFIX)
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

pub fn interface_index(interface: &str) -> Option<u32> {
    let name = CString::new(interface).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between libc targets
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on a bpffs, mounting the standard bpffs if the directory is
/// below it and nothing is mounted there yet (a fresh machine often has none).
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<(), XdpError> {
    let standard = Path::new(STANDARD_BPFFS);
    if pin_dir.starts_with(standard) && !is_bpffs(standard).unwrap_or(false) {
        let target = CString::new(STANDARD_BPFFS).expect("constant has no NUL");
        let fstype = CString::new("bpf").expect("constant has no NUL");
        // SAFETY: all pointers are valid NUL-terminated strings; data may be null for bpffs.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return Err(XdpError::PermissionDenied(format!(
                    "mounting a bpffs on {STANDARD_BPFFS}"
                )));
            }
            return Err(XdpError::NotBpffs(pin_dir.to_owned()));
        }
        info!(path = STANDARD_BPFFS, "mounted a bpffs");
    }
    if let Err(err) = std::fs::create_dir_all(pin_dir) {
        if err.kind() == io::ErrorKind::PermissionDenied {
            return Err(XdpError::PermissionDenied(format!(
                "creating {}",
                pin_dir.display()
            )));
        }
        return Err(XdpError::NotBpffs(pin_dir.to_owned()));
    }
    match is_bpffs(pin_dir) {
        Ok(true) => Ok(()),
        _ => Err(XdpError::NotBpffs(pin_dir.to_owned())),
    }
}

/// Loads the embedded program, attaches it to `interface` and pins program, link and maps in
/// `pin_dir`. When Tandem's link is already there (a restart, an upgrade), the new program
/// replaces the old one inside that link atomically and the pinned maps are kept, so flows in
/// the connection table go on; a link in another mode than the one asked for is replaced.
pub fn attach(interface: &str, mode: AttachMode, pin_dir: &Path) -> Result<Attachment, XdpError> {
    let object = embedded_object().ok_or(XdpError::NoObject)?;
    let if_index = interface_index(interface)
        .ok_or_else(|| XdpError::NoSuchInterface(interface.to_owned()))?;
    ensure_pin_dir(pin_dir)?;
    remove_incompatible_maps(pin_dir)?;
    let link_path = link_pin(pin_dir, interface);
    let mut existing = None;
    if link_path.exists() {
        let current = link::link_state(if_index).ok().and_then(|state| state.xdp);
        let fits = match (mode, current) {
            (_, None) => false,
            (AttachMode::Auto, Some(_)) => true,
            (AttachMode::Native, Some(m)) => m == AttachedMode::Native,
            (AttachMode::Generic, Some(m)) => m == AttachedMode::Generic,
        };
        if fits {
            existing = current;
        } else {
            info!(
                interface,
                ?current,
                "replacing Tandem's XDP attachment (another mode was asked for)"
            );
            detach_link(interface, pin_dir)?;
        }
    }
    let reused_maps = ALL_MAPS
        .iter()
        .filter(|name| !ADDED_LATER.contains(name))
        .all(|name| pin_dir.join(name).exists());
    let result = load_and_attach(object, interface, if_index, mode, pin_dir, existing);
    if result.is_err() && !reused_maps && attached_interfaces(pin_dir).is_empty() {
        // A failed first load must not leave maps behind that a later load would "reuse".
        let _ = remove_pins(pin_dir);
    }
    result.map(|mut attachment| {
        attachment.reused_maps = reused_maps;
        attachment
    })
}

/// Loads the embedded program with its maps pinned in `pin_dir` (reusing compatible ones
/// there), without attaching it anywhere: for BPF_PROG_TEST_RUN (packet fixtures) and tools.
/// The caller owns the returned object; the map pins stay until removed with [`remove_pins`].
pub fn load_unattached(pin_dir: &Path) -> Result<Ebpf, XdpError> {
    let object = embedded_object().ok_or(XdpError::NoObject)?;
    ensure_pin_dir(pin_dir)?;
    remove_incompatible_maps(pin_dir)?;
    let mut ebpf = load_object(object, pin_dir)?;
    program_of(&mut ebpf)?
        .load()
        .map_err(|e| XdpError::from_kernel("verifying the XDP program", &e))?;
    Ok(ebpf)
}

/// Runs the loaded program once on `frame` with BPF_PROG_TEST_RUN, the kernel's own way of
/// feeding a packet to a program without a network, and returns the verdict (an `xdp_action`)
/// and the frame as the program left it. The maps are the real ones: what a run records (a
/// flow, a counter) is there for the next run and for [`super::maps::KernelMaps`] to read.
pub fn test_run(ebpf: &mut Ebpf, frame: &[u8]) -> Result<(u32, Vec<u8>), XdpError> {
    use aya::programs::{TestRun as _, TestRunOptions};
    let program = program_of(ebpf)?;
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .map_err(|e| XdpError::from_kernel("running the XDP program (BPF_PROG_TEST_RUN)", &e))?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// The XDP program of a loaded object.
pub fn program_of(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| XdpError::Kernel {
            what: "loading the XDP object".into(),
            detail: format!(
                "it has no program named {PROGRAM_NAME}; rebuild with `cargo xtask build`"
            ),
        })?
        .try_into()
        .map_err(|e| XdpError::from_kernel("loading the XDP program", &e))
}

/// Loads the object with its maps pinned in `pin_dir` (reused when there), then checks that
/// every map has the layout lb-common declares: an object built from another lb-common is
/// refused before the program runs against maps that userspace would misread.
fn load_object(object: &[u8], pin_dir: &Path) -> Result<Ebpf, XdpError> {
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(object)
        .map_err(|e| XdpError::from_kernel("loading the XDP object", &e))?;
    for layout in &MAP_LAYOUTS {
        let path = pin_dir.join(layout.name);
        let info = MapData::from_pin(&path).and_then(|map| map.info());
        if !info.is_ok_and(|info| has_layout(&info, layout)) {
            return Err(XdpError::Kernel {
                what: "checking the XDP object's maps".into(),
                detail: format!(
                    "map {} is not the {:?} of {} entries ({}-byte keys, {}-byte values) that \
                     lb-common declares; rebuild both with `cargo xtask build`",
                    layout.name,
                    layout.kind,
                    layout.max_entries,
                    layout.key_size,
                    layout.value_size
                ),
            });
        }
    }
    Ok(ebpf)
}

/// aya's type for a map of `kind`.
fn map_type(kind: MapKind) -> aya::maps::MapType {
    use aya::maps::MapType as T;
    match kind {
        MapKind::Hash => T::Hash,
        MapKind::LruHash => T::LruHash,
        MapKind::Array => T::Array,
        MapKind::PerCpuArray => T::PerCpuArray,
    }
}

/// Whether the kernel's map behind `info` has `layout`.
fn has_layout(info: &aya::maps::MapInfo, layout: &MapLayout) -> bool {
    info.map_type().ok() == Some(map_type(layout.kind))
        && info.key_size() == layout.key_size
        && info.value_size() == layout.value_size
        && info.max_entries() == layout.max_entries
}

/// Removes pinned maps whose layout is not this build's, so the loader creates them afresh
/// instead of handing the program a map it would misread. Returns their names.
fn remove_incompatible_maps(pin_dir: &Path) -> Result<Vec<&'static str>, XdpError> {
    let mut removed = Vec::new();
    for layout in &MAP_LAYOUTS {
        let name = layout.name;
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path).and_then(|m| m.info());
        let fits = info.is_ok_and(|info| has_layout(&info, layout));
        if !fits {
            warn!(
                map = name,
                pin_dir = %pin_dir.display(),
                "the pinned map has another layout than this version's: replacing it (what it held is lost)"
            );
            std::fs::remove_file(&path).map_err(|e| XdpError::Kernel {
                what: format!("removing {}", path.display()),
                detail: e.to_string(),
            })?;
            removed.push(name);
        }
    }
    Ok(removed)
}

fn load_and_attach(
    object: &[u8],
    interface: &str,
    if_index: u32,
    mode: AttachMode,
    pin_dir: &Path,
    existing: Option<AttachedMode>,
) -> Result<Attachment, XdpError> {
    let mut ebpf = load_object(object, pin_dir)?;
    let program = program_of(&mut ebpf)?;
    program
        .load()
        .map_err(|e| XdpError::from_kernel("verifying the XDP program", &e))?;

    if let Some(attached_mode) = existing {
        let path = link_pin(pin_dir, interface);
        let pinned = PinnedLink::from_pin(&path)
            .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| XdpError::from_kernel(format!("using {}", path.display()), &e))?;
        let link_id = program.attach_to_link(link).map_err(|e| {
            XdpError::from_kernel(
                format!("replacing the program attached to `{interface}`"),
                &e,
            )
        })?;
        // The pin keeps the link (and so the attachment); this descriptor is not needed.
        drop(program.take_link(link_id));
        info!(
            interface,
            mode = %attached_mode,
            "replaced the XDP program inside the existing link"
        );
        return pin_program(program, interface, attached_mode, pin_dir);
    }

    let (link_id, attached_mode) = match mode {
        AttachMode::Native => (
            attach_in(program, if_index, interface, XdpMode::Driver)?,
            AttachedMode::Native,
        ),
        AttachMode::Generic => (
            attach_in(program, if_index, interface, XdpMode::Skb)?,
            AttachedMode::Generic,
        ),
        AttachMode::Auto => match attach_in(program, if_index, interface, XdpMode::Driver) {
            Ok(id) => (id, AttachedMode::Native),
            Err(native_error) => {
                warn!(interface, error = %native_error, "native XDP unavailable; attaching in generic mode");
                (
                    attach_in(program, if_index, interface, XdpMode::Skb)?,
                    AttachedMode::Generic,
                )
            }
        },
    };

    let link = program
        .take_link(link_id)
        .map_err(|e| XdpError::from_kernel("taking the XDP link", &e))?;
    let fd_link = FdLink::try_from(link).map_err(|e| {
        XdpError::from_kernel(
            "pinning the XDP link (the kernel attached without bpf_link)",
            &e,
        )
    })?;
    fd_link.pin(link_pin(pin_dir, interface)).map_err(|e| {
        XdpError::from_kernel(format!("pinning the XDP link in {}", pin_dir.display()), &e)
    })?;
    pin_program(program, interface, attached_mode, pin_dir)
}

fn pin_program(
    program: &mut Xdp,
    interface: &str,
    attached_mode: AttachedMode,
    pin_dir: &Path,
) -> Result<Attachment, XdpError> {
    let program_pin = pin_dir.join(PROGRAM_PIN);
    if program_pin.exists() {
        // Another interface's (or an older) program: the newest load is the one to inspect.
        let _ = std::fs::remove_file(&program_pin);
    }
    program.pin(&program_pin).map_err(|e| {
        XdpError::from_kernel(
            format!("pinning the XDP program in {}", pin_dir.display()),
            &e,
        )
    })?;
    let program_id = program
        .info()
        .map_err(|e| XdpError::from_kernel("reading the program's id", &e))?
        .id();
    Ok(Attachment {
        interface: interface.to_owned(),
        mode: attached_mode,
        program_id,
        pin_dir: pin_dir.to_owned(),
        reused_maps: false,
    })
}

fn attach_in(
    program: &mut Xdp,
    if_index: u32,
    interface: &str,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, XdpError> {
    program.attach_to_if_index(if_index, mode).map_err(|e| {
        XdpError::from_kernel(
            format!("attaching XDP to `{interface}` in {mode:?} mode"),
            &e,
        )
    })
}

fn detach_link(interface: &str, pin_dir: &Path) -> Result<(), XdpError> {
    let path = link_pin(pin_dir, interface);
    if !path.exists() {
        return Err(XdpError::NotAttached {
            interface: interface.to_owned(),
            pin_dir: pin_dir.to_owned(),
        });
    }
    let pinned = PinnedLink::from_pin(&path)
        .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))?;
    // Dropping the unpinned link closes its last descriptor, which detaches the program.
    let link = pinned
        .unpin()
        .map_err(|e| XdpError::from_kernel(format!("removing {}", path.display()), &e))?;
    drop(link);
    Ok(())
}

/// Detaches Tandem's program from `interface`. When no interface is left attached, the program
/// and map pins and the directory are removed too, so nothing of Tandem stays in the kernel.
/// Returns true when the pin directory was removed.
pub fn detach(interface: &str, pin_dir: &Path) -> Result<bool, XdpError> {
    detach_link(interface, pin_dir)?;
    if !attached_interfaces(pin_dir).is_empty() {
        return Ok(false);
    }
    remove_pins(pin_dir)
}

/// Removes the program and map pins, then the directory if nothing else is in it (an
/// operator's own pins there are kept). Returns true when the directory was removed.
pub fn remove_pins(pin_dir: &Path) -> Result<bool, XdpError> {
    for name in std::iter::once(PROGRAM_PIN).chain(ALL_MAPS) {
        let path = pin_dir.join(name);
        if let Err(err) = std::fs::remove_file(&path) {
            if err.kind() != io::ErrorKind::NotFound {
                return Err(XdpError::Kernel {
                    what: format!("removing {}", path.display()),
                    detail: err.to_string(),
                });
            }
        }
    }
    Ok(std::fs::remove_dir(pin_dir).is_ok())
}
