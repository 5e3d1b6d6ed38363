//! Discovery of the OpenTelemetry thread-context slot (OTEP 4947) in a live process.
//!
//! A process that publishes thread context exports the ELF TLS symbol `otel_thread_ctx_v1`
//! (`STT_TLS`, in `.dynsym` of the executable or of a shared library). Each thread has its own
//! copy: a pointer to the thread's context record. This module finds where that copy lives
//! relative to a thread's thread pointer (x86_64 `fsbase`), so that an eBPF program can read it
//! when the thread is switched out.
//!
//! Layout assumed (glibc, x86_64, TLS variant II):
//! - static TLS blocks sit below the thread pointer, so a static slot is `tp + offset` with a
//!   negative `offset`;
//! - the word at `tp + 8` (`tcbhead_t::dtv`) points at the thread's DTV; entry `m` (16 bytes:
//!   block pointer, pointer to free) is at `dtv + 16 * m`, the word at `dtv - 16` is the number
//!   of entries allocated for this thread, and a block that the thread has not touched yet
//!   holds `TLS_DTV_UNALLOCATED` (all ones).
//!
//! Sources of truth, best first: a relocated GOT word read from process memory (initial-exec
//! `R_X86_64_TPOFF64`, a TLSDESC descriptor, a General Dynamic `tls_index` pair), then, when the
//! executable defines the symbol and nothing relocates it (local-exec), glibc's placement of the
//! executable's TLS block recomputed from its `PT_TLS` header.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[cfg(test)]
use culprit_common::context::variable_address;
use culprit_common::context::{ContextLocation, slot_kind};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Rela, SectionHeader, Sym};
use object::read::{ReadCache, StringTable};

mod maps;
#[cfg(test)]
mod tests;

pub(crate) use maps::{MappedFile, parse_maps};

/// Name of the TLS symbol defined by OTEP 4947.
pub(crate) const SYMBOL_NAME: &[u8] = b"otel_thread_ctx_v1";
/// At most this many distinct mapped files are inspected per process.
pub(crate) const MAX_FILES: usize = 512;
/// Mapped files larger than this are skipped (nothing that size is a TLS-publishing library).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;
const PAGE_BYTES: u64 = 4096;
/// Static TLS (all startup modules plus the dlopen surplus) is far smaller than this; a larger
/// magnitude means the word is not a thread-pointer offset.
const MAX_TP_OFFSET_BYTES: u64 = 1 << 32;
/// Bound on plausible module ids and block offsets, to reject garbage GOT words.
const MAX_MODULE_ID: u64 = 1 << 20;
const MAX_BLOCK_OFFSET_BYTES: u64 = 1 << 32;
/// x86_64 user addresses are below 2^47 (2^56 with 5-level paging).
const USER_ADDRESS_END: u64 = 1 << 56;
const AT_ENTRY: u64 = 9;

/// Where a thread's `otel_thread_ctx_v1` slot is, given the thread's thread pointer (fsbase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsSlot {
    /// Static TLS: the slot is at thread_pointer + offset (negative on x86_64, TLS variant II).
    ThreadPointer { offset: i64 },
    /// Dynamic TLS (a dlopen'd module): the slot is at dtv[module].pointer + offset, where the
    /// dtv is the word at thread_pointer + 8 (glibc tcbhead_t) and each dtv entry is 16 bytes.
    Dtv { module: u64, offset: u64 },
}

/// The TLS access model the slot was derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsModel {
    LocalExec,
    InitialExec,
    Tlsdesc,
    GeneralDynamic,
}

/// The located slot, with the model and the ELF file it was derived from (the file holding the
/// relocation that was read, or the executable for local-exec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadContextSlot {
    pub slot: TlsSlot,
    pub model: TlsModel,
    pub module_path: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LocateError {
    /// A `/proc/<pid>` file could not be read (the process exited, or permissions).
    #[error("reading {path}: {source}")]
    Proc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The symbol is present in `path` but its slot could not be derived.
    #[error("{symbol} in {path}: {reason}", symbol = String::from_utf8_lossy(SYMBOL_NAME))]
    Unresolved { path: PathBuf, reason: String },
}

/// Load bias of a module: runtime address minus link-time virtual address. `loads` are the
/// `(p_offset, p_vaddr)` of its `PT_LOAD` headers; `first_start` is where its offset-0 mapping
/// begins. `ET_EXEC` is never relocated.
pub(crate) fn load_bias(e_type: u16, first_start: u64, loads: &[(u64, u64)]) -> Option<u64> {
    if e_type == elf::ET_EXEC {
        return Some(0);
    }
    // The offset-0 mapping is the PT_LOAD whose file offset rounds down to page 0.
    let &(_, vaddr) = loads.iter().find(|(offset, _)| *offset < PAGE_BYTES)?;
    first_start.checked_sub(vaddr & !(PAGE_BYTES - 1))
}

/// An executable's `PT_TLS` header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsSegment {
    pub vaddr: u64,
    pub memsz_bytes: u64,
    pub align_bytes: u64,
}

/// Distance in bytes from the thread pointer down to the start of the executable's TLS block
/// (glibc's `l_tls_offset` of the main program).
///
/// The executable is module 1 and is placed first by glibc's `_dl_determine_tlsoffset`
/// (`TLS_TCB_AT_TP`): `roundup(memsz - firstbyte, align) + firstbyte`, with
/// `firstbyte = -(vaddr mod align) mod align`, so that the block start is congruent to `vaddr`
/// modulo `align`. A statically linked executable (no `PT_INTERP`) gets its block from
/// `__libc_setup_tls` instead, which uses `roundup(memsz, align)`. Both agree, and match what
/// the linker assumes for local-exec, when `vaddr` is aligned, as linkers emit it.
pub(crate) fn executable_tls_block_offset(segment: TlsSegment, statically_linked: bool) -> u64 {
    let align = segment.align_bytes.max(1);
    let roundup = |value: u64| value.div_ceil(align) * align;
    if statically_linked {
        return roundup(segment.memsz_bytes);
    }
    let firstbyte = segment.vaddr.wrapping_neg() & (align - 1);
    roundup(segment.memsz_bytes.wrapping_sub(firstbyte)).wrapping_add(firstbyte)
}

/// Thread-pointer offset of a symbol of the executable: `st_value` is relative to the start of
/// the TLS segment, whose copy begins `executable_tls_block_offset` bytes below the thread
/// pointer.
pub(crate) fn local_exec_offset(
    st_value: u64,
    segment: TlsSegment,
    statically_linked: bool,
) -> i64 {
    st_value.wrapping_sub(executable_tls_block_offset(segment, statically_linked)) as i64
}

/// What the argument word of a relocated TLSDESC descriptor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsdescArg {
    /// `_dl_tlsdesc_return`: the variable is in static TLS, at this thread-pointer offset.
    ThreadPointerOffset(i64),
    /// `_dl_tlsdesc_dynamic`: address of `struct { u64 module; u64 offset; u64 gen_count; }`.
    DynamicArg(u64),
}

/// Decides what a TLSDESC argument is, from its value alone: glibc stores either a static-TLS
/// offset, which is negative under TLS variant II and smaller in magnitude than 2^32, or a
/// pointer into the process heap, which as a user-space address is positive. Zero (never
/// relocated, or an undefined weak symbol) and anything else is rejected.
pub(crate) fn classify_tlsdesc_arg(arg: u64) -> Option<TlsdescArg> {
    let signed = arg as i64;
    if signed < 0 && arg.wrapping_neg() <= MAX_TP_OFFSET_BYTES {
        Some(TlsdescArg::ThreadPointerOffset(signed))
    } else if (PAGE_BYTES..USER_ADDRESS_END).contains(&arg) {
        Some(TlsdescArg::DynamicArg(arg))
    } else {
        None
    }
}

/// Validates a relocated thread-pointer offset (initial-exec GOT word, TLSDESC argument).
fn tp_offset(word: u64) -> Result<TlsSlot, String> {
    match classify_tlsdesc_arg(word) {
        Some(TlsdescArg::ThreadPointerOffset(offset)) => Ok(TlsSlot::ThreadPointer { offset }),
        _ => Err(format!(
            "{word:#x} is not a static TLS offset (unrelocated?)"
        )),
    }
}

/// Validates a relocated `tls_index` pair (module id, offset within the module's block).
fn dtv_slot(module: u64, offset: u64) -> Result<TlsSlot, String> {
    if module == 0 || module > MAX_MODULE_ID || offset >= MAX_BLOCK_OFFSET_BYTES {
        return Err(format!(
            "module {module:#x} offset {offset:#x} is not a relocated tls_index"
        ));
    }
    Ok(TlsSlot::Dtv { module, offset })
}

/// Reads a native-endian word of process memory through `/proc/<pid>/mem`.
fn read_word(mem: &File, address: u64) -> io::Result<u64> {
    let mut word = [0u8; 8];
    mem.read_exact_at(&mut word, address)?;
    Ok(u64::from_ne_bytes(word))
}

impl TlsSlot {
    /// The slot as the programs read it (map `CONTEXT_LOCATIONS`).
    pub(crate) fn location(&self) -> ContextLocation {
        match *self {
            TlsSlot::ThreadPointer { offset } => ContextLocation {
                kind: slot_kind::THREAD_POINTER,
                tp_offset: offset,
                ..ContextLocation::default()
            },
            TlsSlot::Dtv { module, offset } => ContextLocation {
                kind: slot_kind::DTV,
                dtv_module: module,
                dtv_offset: offset,
                ..ContextLocation::default()
            },
        }
    }
}

/// Address of the slot for one thread of process `pid`, evaluated by the very function the
/// programs run (`culprit_common::context::variable_address`) over the process's memory.
/// `None` when this thread has no block for the module yet (it never touched a variable of a
/// module loaded after it started). A dtv is updated lazily: after a `dlclose` and a new
/// `dlopen` reuse a module id, a thread's entry can be stale until it next calls
/// `__tls_get_addr`, so the record read through it must be checked (its `valid` byte).
#[cfg(test)]
pub(crate) fn slot_address(pid: u32, fsbase: u64, slot: &TlsSlot) -> io::Result<Option<u64>> {
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    Ok(variable_address(&slot.location(), fsbase, |addr| {
        read_word(&mem, addr).ok()
    }))
}

/// A slot derived from one source, with its rank: relocated thread-pointer offsets (0) beat the
/// recomputed local-exec offset (1), which beats DTV slots (2: two more dependent reads for the
/// eBPF reader).
type Found = (u8, TlsSlot, TlsModel);

/// Locates `otel_thread_ctx_v1` in process `pid`.
///
/// `Ok(None)`: the process publishes no thread context (no mapped ELF defines the symbol), the
/// normal case. `Err`: the symbol is there but its slot cannot be derived; the error names the
/// file and the reason. When several sources give a slot, the one cheapest for the eBPF reader
/// wins (see `Found`); a usable slot from one module beats an error from another.
pub(crate) fn locate(pid: u32) -> Result<Option<ThreadContextSlot>, LocateError> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let proc_err = |name: &str| {
        let path = proc_dir.join(name);
        move |source| LocateError::Proc { path, source }
    };
    let maps = std::fs::read_to_string(proc_dir.join("maps")).map_err(proc_err("maps"))?;
    let auxv = std::fs::read(proc_dir.join("auxv")).map_err(proc_err("auxv"))?;
    // The executable is the file mapped at the entry point the kernel handed to the process;
    // unlike comparing with /proc/<pid>/exe this holds across mount namespaces and overlayfs.
    let entry = auxv
        .chunks_exact(16)
        .map(|pair| {
            let word = |at: usize| u64::from_ne_bytes(pair[at..at + 8].try_into().unwrap());
            (word(0), word(8))
        })
        .find(|&(key, _)| key == AT_ENTRY)
        .map_or(0, |(_, value)| value);

    let mut best: Option<(u8, ThreadContextSlot)> = None;
    let mut errors = Vec::new();
    let mut defined_in = None;
    for file in parse_maps(&maps).iter().take(MAX_FILES) {
        let is_executable = file.ranges.iter().any(|range| range.contains(&entry));
        let Some((defines_symbol, found)) = scan_file(&proc_dir, file, is_executable) else {
            continue;
        };
        if defines_symbol && defined_in.is_none() {
            defined_in = Some(file.path.clone());
        }
        for result in found {
            let path = file.path.clone();
            match result {
                Ok((rank, slot, model)) if best.as_ref().is_none_or(|(best, _)| rank < *best) => {
                    best = Some((
                        rank,
                        ThreadContextSlot {
                            slot,
                            model,
                            module_path: path,
                        },
                    ));
                }
                Ok(_) => {}
                Err(reason) => errors.push(LocateError::Unresolved { path, reason }),
            }
        }
    }
    // musl's dtv has 8-byte entries and its count in entry 0, not glibc's layout the programs
    // read: a dynamic slot there would be read at the wrong place.
    let musl = maps.lines().any(|l| l.contains("/ld-musl-"));
    match (best, errors.into_iter().next(), defined_in) {
        (Some((_, slot)), _, _) if musl && matches!(slot.slot, TlsSlot::Dtv { .. }) => {
            Err(LocateError::Unresolved {
                path: slot.module_path,
                reason: "dynamic TLS under musl is not supported (glibc's dtv layout only)".into(),
            })
        }
        (Some((_, slot)), _, _) => Ok(Some(slot)),
        (None, Some(error), _) => Err(error),
        (None, None, Some(path)) => Err(LocateError::Unresolved {
            path,
            reason: "no relocation names it and it is not in the executable \
                     (local-dynamic access is not supported)"
                .into(),
        }),
        (None, None, None) => Ok(None),
    }
}

/// Opens the file behind a mapping: through `map_files` (the exact mapped inode, in any mount
/// namespace, even if deleted; needs CAP_SYS_ADMIN), else through the process's root.
fn open_mapped(proc_dir: &Path, file: &MappedFile) -> Option<File> {
    let range = file.first.as_ref().or(file.ranges.first())?;
    let by_range = proc_dir.join(format!("map_files/{:x}-{:x}", range.start, range.end));
    // `file.path` is absolute: this is `/proc/<pid>/root/<path>`.
    let by_root = proc_dir.join(format!("root{}", file.path.display()));
    let opened = File::open(by_range).or_else(|_| File::open(by_root)).ok()?;
    // Regular files only: a mapped device or pipe could block a read or never end.
    let meta = opened.metadata().ok()?;
    (meta.is_file() && meta.len() <= MAX_FILE_BYTES).then_some(opened)
}

/// Inspects one mapped file: whether it defines the symbol, and what each source of the slot in
/// it gave. `None` (skipped silently) when the file is unreadable, or not a 64-bit ELF with a
/// `.dynsym` naming the symbol as `STT_TLS`: it cannot be shown to hold the symbol.
fn scan_file(
    proc_dir: &Path,
    file: &MappedFile,
    is_executable: bool,
) -> Option<(bool, Vec<Result<Found, String>>)> {
    // Reads only the headers, `.dynsym`, `.dynstr` and relocation sections, not the whole file.
    let cache = ReadCache::new(open_mapped(proc_dir, file)?);
    let data = &cache;
    let header = elf::FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let dynsym = sections.symbols(endian, data, elf::SHT_DYNSYM).ok()?;
    // Names are compared against one in-memory copy of `.dynstr`: a single read, instead of one
    // read per symbol name through the cache.
    let strtab = sections
        .section(dynsym.string_section())
        .ok()?
        .data(endian, data)
        .ok()?;
    let strings = StringTable::new(strtab, 0, strtab.len() as u64);
    let (index, symbol) = dynsym.enumerate().find(|(_, sym)| {
        sym.st_type() == elf::STT_TLS && sym.name(endian, strings).is_ok_and(|n| n == SYMBOL_NAME)
    })?;

    let defines_symbol = symbol.st_shndx(endian) != elf::SHN_UNDEF;
    let mut found: Vec<Result<Found, String>> = Vec::new();
    let phdrs = header.program_headers(endian, data).unwrap_or_default();
    let has = |p_type| phdrs.iter().find(|ph| ph.p_type(endian) == p_type);
    if defines_symbol && is_executable {
        found.push(match has(elf::PT_TLS) {
            Some(ph) => {
                let segment = TlsSegment {
                    vaddr: ph.p_vaddr(endian),
                    memsz_bytes: ph.p_memsz(endian),
                    align_bytes: ph.p_align(endian),
                };
                let statically_linked = has(elf::PT_INTERP).is_none();
                let offset = local_exec_offset(symbol.st_value(endian), segment, statically_linked);
                Ok((1, TlsSlot::ThreadPointer { offset }, TlsModel::LocalExec))
            }
            None => Err("TLS symbol but no PT_TLS segment".into()),
        });
    }

    let loads: Vec<(u64, u64)> = phdrs
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .map(|ph| (ph.p_offset(endian), ph.p_vaddr(endian)))
        .collect();
    let first_start = file.first.as_ref().map(|first| first.start);
    let bias = first_start.and_then(|start| load_bias(header.e_type(endian), start, &loads));
    // `.rela.dyn` and `.rela.plt` (where TLSDESC usually goes) both link to `.dynsym`.
    let relas = sections
        .iter()
        .filter_map(|section| match section.rela(endian, data) {
            Ok(Some((relas, link))) if link == dynsym.section() => Some(relas),
            _ => None,
        });
    // Opened only for files that name the symbol, so that processes which publish nothing never
    // need ptrace-level access.
    let mut mem = None;
    let tls = [
        elf::R_X86_64_TPOFF64,
        elf::R_X86_64_TLSDESC,
        elf::R_X86_64_DTPMOD64,
    ];
    for rela in relas.flatten() {
        let r_type = rela.r_type(endian, false);
        if rela.r_sym(endian, false) as usize != index.0 || !tls.contains(&r_type) {
            continue;
        }
        let Some(bias) = bias else {
            found.push(Err(
                "no load bias: no offset-0 mapping or no matching PT_LOAD".into(),
            ));
            continue;
        };
        let got = bias.wrapping_add(rela.r_offset(endian));
        let mem = mem.get_or_insert_with(|| File::open(proc_dir.join("mem")));
        found.push(match mem {
            Ok(mem) => {
                read_relocated(mem, r_type, got).map_err(|e| format!("GOT at {got:#x}: {e}"))
            }
            Err(e) => Err(format!("opening {}/mem: {e}", proc_dir.display())),
        });
    }
    Some((defines_symbol, found))
}

/// Reads a relocated TLS GOT entry and turns it into a ranked slot.
fn read_relocated(mem: &File, r_type: u32, got: u64) -> Result<Found, String> {
    let word = |address| read_word(mem, address).map_err(|e| format!("reading {address:#x}: {e}"));
    match r_type {
        elf::R_X86_64_TPOFF64 => Ok((0, tp_offset(word(got)?)?, TlsModel::InitialExec)),
        elf::R_X86_64_TLSDESC => {
            // struct tlsdesc { resolver; arg; }
            if word(got)? == 0 {
                return Err("TLSDESC resolver is null (unrelocated)".into());
            }
            let arg = word(got.wrapping_add(8))?;
            match classify_tlsdesc_arg(arg) {
                Some(TlsdescArg::ThreadPointerOffset(offset)) => {
                    Ok((0, TlsSlot::ThreadPointer { offset }, TlsModel::Tlsdesc))
                }
                // A still-lazy descriptor (older glibc) points at its `Elf64_Rela` instead; its
                // `r_info` (symbol index << 32) fails the offset bound.
                Some(TlsdescArg::DynamicArg(arg)) => {
                    Ok((2, dtv_slot(word(arg)?, word(arg + 8)?)?, TlsModel::Tlsdesc))
                }
                None => Err(format!("TLSDESC argument {arg:#x} is unusable")),
            }
        }
        // A General Dynamic `tls_index` pair: DTPMOD64 here, its DTPOFF64 (relocated, or a
        // link-time constant when the definition is local) in the next word.
        _ => {
            let slot = dtv_slot(word(got)?, word(got.wrapping_add(8))?)?;
            Ok((2, slot, TlsModel::GeneralDynamic))
        }
    }
}
