//! GPUs: NVML's view of the node, matched to what this allocation was given.
//!
//! NVML lists every GPU of the node it can open, whatever CUDA_VISIBLE_DEVICES says. The rule:
//! - the scheduler granted no GPUs (`GpuGrant::None`): none;
//! - CUDA_VISIBLE_DEVICES is set: it decides. Entries are indices into NVML's order, GPU UUIDs
//!   (`GPU-…`, a unique prefix is enough, as for CUDA) or MIG instance UUIDs (`MIG-…`);
//!   `NoDevFiles` or an empty value means none. Like CUDA, the first entry that names no device
//!   (or repeats one) ends the list;
//! - else the scheduler's ids (`GpuGrant::Ids`): UUIDs, or numbers. A number is the GPU's device
//!   minor (/dev/nvidiaN, what schedulers' GPU indices follow) when NVML reports minors, else its
//!   NVML index: with device cgroups NVML sees only the granted GPUs, so the two differ;
//! - else every GPU NVML sees.
//!
//! A missing NVML library (no NVIDIA driver on this node) is 0 GPUs with a note, not an error.

use super::{DiscoveryError, GpuGrant};

pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// One GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalGpu {
    pub nvml_index: u32,
    /// "GPU-…"
    pub uuid: String,
    pub name: String,
    pub memory_bytes: Option<u64>,
    /// "00000000:3B:00.0"
    pub pci_bus_id: Option<String>,
    /// N of /dev/nvidiaN.
    pub minor_number: Option<u32>,
    /// MIG instances, when the GPU is in MIG mode.
    pub mig: Vec<MigInstance>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigInstance {
    /// "MIG-…"
    pub uuid: String,
    pub memory_bytes: Option<u64>,
}

/// A GPU (or MIG instance) this process was given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    /// The CUDA device index this process sees it as.
    pub index: u32,
    /// NVML's index of the (parent) GPU.
    pub nvml_index: u32,
    /// "GPU-…", or "MIG-…" for a MIG instance.
    pub uuid: String,
    pub name: String,
    pub memory_bytes: Option<u64>,
    pub pci_bus_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No GPUs can be used here at all (no NVML library, no driver): 0 GPUs, with this note.
    #[error("{0}")]
    Unavailable(String),
    /// NVML is there but failed: a discovery error.
    #[error("{0}")]
    Failed(String),
}

/// Lists the node's GPUs (NVML for real; fakes in tests).
pub trait GpuProbe {
    /// The GPUs, in NVML index order.
    fn gpus(&self) -> Result<Vec<PhysicalGpu>, ProbeError>;
}

/// NVML through nvml-wrapper, loaded at run time: builds and runs where no NVIDIA library exists.
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmlProbe;

/// NVML allows at most 7 MIG instances per GPU today; look a little further.
const MAX_MIG_SLOTS: u32 = 16;

impl GpuProbe for NvmlProbe {
    fn gpus(&self) -> Result<Vec<PhysicalGpu>, ProbeError> {
        use nvml_wrapper::Nvml;
        use nvml_wrapper::error::NvmlError;

        let nvml = match Nvml::init() {
            Ok(nvml) => nvml,
            Err(NvmlError::LibloadingError(e)) => {
                return Err(ProbeError::Unavailable(format!("no NVML library ({e})")));
            }
            Err(NvmlError::LibraryNotFound) => {
                return Err(ProbeError::Unavailable("no NVML library".to_string()));
            }
            Err(NvmlError::DriverNotLoaded) => {
                return Err(ProbeError::Unavailable(
                    "NVML library present but the NVIDIA driver is not loaded".to_string(),
                ));
            }
            Err(e) => return Err(ProbeError::Failed(format!("initializing NVML: {e}"))),
        };
        let count = nvml
            .device_count()
            .map_err(|e| ProbeError::Failed(format!("counting GPUs: {e}")))?;
        let mut gpus = Vec::new();
        for i in 0..count {
            let dev = match nvml.device_by_index(i) {
                Ok(dev) => dev,
                // Not ours to use (device cgroup) or gone: not a GPU this process has.
                Err(NvmlError::NoPermission | NvmlError::GpuLost) => continue,
                Err(e) => return Err(ProbeError::Failed(format!("opening GPU {i}: {e}"))),
            };
            let uuid = dev
                .uuid()
                .map_err(|e| ProbeError::Failed(format!("reading the UUID of GPU {i}: {e}")))?;
            let mig_on = dev.mig_mode().map(|m| m.current != 0).unwrap_or(false);
            let mig = if mig_on {
                (0..MAX_MIG_SLOTS)
                    .filter_map(|j| dev.mig_device_by_index(j).ok())
                    .filter_map(|m| {
                        Some(MigInstance {
                            uuid: m.uuid().ok()?,
                            memory_bytes: m.memory_info().ok().map(|info| info.total),
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            gpus.push(PhysicalGpu {
                nvml_index: i,
                uuid,
                name: dev
                    .name()
                    .unwrap_or_else(|_| "unknown NVIDIA GPU".to_string()),
                memory_bytes: dev.memory_info().ok().map(|info| info.total),
                pci_bus_id: dev.pci_info().ok().map(|p| p.bus_id),
                minor_number: dev.minor_number().ok(),
                mig,
            });
        }
        Ok(gpus)
    }
}

/// What one id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Position in the probe's list.
    Gpu(usize),
    /// (position of the parent, position of the instance).
    Mig(usize, usize),
}

/// A GPU or MIG UUID, exact or by unique prefix (case-insensitive).
fn match_uuid(gpus: &[PhysicalGpu], id: &str) -> Option<Target> {
    let id = id.to_ascii_lowercase();
    let mut candidates: Vec<(Target, String)> = Vec::new();
    for (g, gpu) in gpus.iter().enumerate() {
        candidates.push((Target::Gpu(g), gpu.uuid.to_ascii_lowercase()));
        for (m, mig) in gpu.mig.iter().enumerate() {
            candidates.push((Target::Mig(g, m), mig.uuid.to_ascii_lowercase()));
        }
    }
    if let Some((t, _)) = candidates.iter().find(|(_, u)| *u == id) {
        return Some(*t);
    }
    let mut prefixed = candidates.iter().filter(|(_, u)| u.starts_with(&id));
    match (prefixed.next(), prefixed.next()) {
        (Some((t, _)), None) if id.len() > 4 => Some(*t),
        _ => None,
    }
}

fn info(gpus: &[PhysicalGpu], target: Target, index: usize) -> GpuInfo {
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    match target {
        Target::Gpu(g) => {
            let gpu = &gpus[g];
            GpuInfo {
                index,
                nvml_index: gpu.nvml_index,
                uuid: gpu.uuid.clone(),
                name: gpu.name.clone(),
                memory_bytes: gpu.memory_bytes,
                pci_bus_id: gpu.pci_bus_id.clone(),
            }
        }
        Target::Mig(g, m) => {
            let gpu = &gpus[g];
            let mig = &gpu.mig[m];
            GpuInfo {
                index,
                nvml_index: gpu.nvml_index,
                uuid: mig.uuid.clone(),
                name: format!("{} (MIG instance)", gpu.name),
                memory_bytes: mig.memory_bytes,
                pci_bus_id: gpu.pci_bus_id.clone(),
            }
        }
    }
}

fn probe(p: &dyn GpuProbe) -> Result<Result<Vec<PhysicalGpu>, String>, DiscoveryError> {
    match p.gpus() {
        Ok(mut gpus) => {
            gpus.sort_by_key(|g| g.nvml_index);
            Ok(Ok(gpus))
        }
        Err(ProbeError::Unavailable(why)) => Ok(Err(why)),
        Err(ProbeError::Failed(why)) => Err(DiscoveryError::Gpu(why)),
    }
}

fn mig_note(gpus: &[PhysicalGpu], chosen: &[GpuInfo]) -> Option<String> {
    let in_mig: Vec<String> = chosen
        .iter()
        .filter(|c| gpus.iter().any(|g| g.uuid == c.uuid && !g.mig.is_empty()))
        .map(|c| c.uuid.clone())
        .collect();
    (!in_mig.is_empty()).then(|| {
        format!(
            "{} in MIG mode: set CUDA_VISIBLE_DEVICES to MIG instance UUIDs to use it",
            in_mig.join(", ")
        )
    })
}

/// The GPUs this process was given, and a note on why there are none or fewer.
pub(crate) fn select(
    p: &dyn GpuProbe,
    cuda_visible: Option<&str>,
    grant: &GpuGrant,
) -> Result<(Vec<GpuInfo>, Option<String>), DiscoveryError> {
    if *grant == GpuGrant::None {
        return Ok((vec![], Some("the scheduler granted no GPUs".to_string())));
    }
    if let Some(raw) = cuda_visible {
        return select_cuda_visible(p, raw);
    }
    if let GpuGrant::Ids(ids) = grant {
        return select_granted(p, ids);
    }
    let gpus = match probe(p)? {
        Ok(gpus) => gpus,
        Err(why) => return Ok((vec![], Some(why))),
    };
    if gpus.is_empty() {
        return Ok((vec![], Some("NVML sees no GPUs".to_string())));
    }
    let chosen: Vec<GpuInfo> = (0..gpus.len())
        .map(|g| info(&gpus, Target::Gpu(g), g))
        .collect();
    let note = mig_note(&gpus, &chosen);
    Ok((chosen, note))
}

fn select_cuda_visible(
    p: &dyn GpuProbe,
    raw: &str,
) -> Result<(Vec<GpuInfo>, Option<String>), DiscoveryError> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok((vec![], Some("CUDA_VISIBLE_DEVICES is empty".to_string())));
    }
    if value.eq_ignore_ascii_case("NoDevFiles") {
        return Ok((
            vec![],
            Some("CUDA_VISIBLE_DEVICES=NoDevFiles (no GPU devices were allocated)".to_string()),
        ));
    }
    let gpus = match probe(p)? {
        Ok(gpus) => gpus,
        Err(why) => {
            return Ok((
                vec![],
                Some(format!("{why}; CUDA_VISIBLE_DEVICES={value} ignored")),
            ));
        }
    };
    let mut chosen: Vec<GpuInfo> = Vec::new();
    let mut taken: Vec<Target> = Vec::new();
    let mut note = None;
    for entry in value.split(',').map(str::trim) {
        let target = match entry.parse::<i64>() {
            Ok(n) => usize::try_from(n)
                .ok()
                .filter(|&n| n < gpus.len())
                .map(Target::Gpu),
            Err(_) => match_uuid(&gpus, entry),
        };
        let Some(target) = target else {
            note = Some(format!(
                "CUDA_VISIBLE_DEVICES={value}: {entry:?} names no GPU NVML sees ({} GPUs), so CUDA \
                 ignores it and every entry after it",
                gpus.len()
            ));
            break;
        };
        if taken.contains(&target) {
            note = Some(format!(
                "CUDA_VISIBLE_DEVICES={value}: {entry:?} repeats a device, so CUDA ignores it and \
                 every entry after it"
            ));
            break;
        }
        taken.push(target);
        chosen.push(info(&gpus, target, chosen.len()));
    }
    if chosen.is_empty() && note.is_none() {
        note = Some(format!("CUDA_VISIBLE_DEVICES={value} names no GPU"));
    }
    let note = join_notes(note, mig_note(&gpus, &chosen));
    Ok((chosen, note))
}

fn select_granted(
    p: &dyn GpuProbe,
    ids: &[String],
) -> Result<(Vec<GpuInfo>, Option<String>), DiscoveryError> {
    let ids: Vec<&str> = ids
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return Ok((
            vec![],
            Some("the scheduler granted an empty GPU list".to_string()),
        ));
    }
    let gpus = match probe(p)? {
        Ok(gpus) => gpus,
        Err(why) => {
            return Ok((
                vec![],
                Some(format!(
                    "{why}; the scheduler granted GPUs {}",
                    ids.join(",")
                )),
            ));
        }
    };
    let by_minor = !gpus.is_empty() && gpus.iter().all(|g| g.minor_number.is_some());
    let mut targets: Vec<Target> = Vec::new();
    let mut unseen: Vec<&str> = Vec::new();
    for id in ids {
        let target = match id.parse::<u32>() {
            Ok(n) if by_minor => gpus
                .iter()
                .position(|g| g.minor_number == Some(n))
                .map(Target::Gpu),
            Ok(n) => gpus.iter().position(|g| g.nvml_index == n).map(Target::Gpu),
            Err(_) => match_uuid(&gpus, id),
        };
        match target {
            Some(t) if !targets.contains(&t) => targets.push(t),
            Some(_) => {}
            None => unseen.push(id),
        }
    }
    // Without CUDA_VISIBLE_DEVICES, CUDA numbers the GPUs it sees in NVML's (PCI) order.
    targets.sort_by_key(|t| match *t {
        Target::Gpu(g) => (g, 0),
        Target::Mig(g, m) => (g, m + 1),
    });
    let chosen: Vec<GpuInfo> = targets
        .iter()
        .enumerate()
        .map(|(i, &t)| match t {
            Target::Gpu(g) => info(&gpus, t, g),
            Target::Mig(..) => info(&gpus, t, i),
        })
        .collect();
    let note = (!unseen.is_empty()).then(|| {
        format!(
            "the scheduler granted GPU {} that NVML does not see (matched by {})",
            unseen.join(","),
            if by_minor {
                "device minor or UUID"
            } else {
                "NVML index or UUID"
            }
        )
    });
    let note = join_notes(note, mig_note(&gpus, &chosen));
    Ok((chosen, note))
}

fn join_notes(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}
