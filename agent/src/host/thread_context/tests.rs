use super::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

#[test]
fn parse_maps_groups_file_mappings_and_skips_the_rest() {
    let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234 /usr/bin/app
55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1234 /usr/bin/app
55d0c0c00000-55d0c0c21000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 r-xp 00002000 fd:01 99 /opt/my lib/libx.so (deleted)
7f0000001000-7f0000002000 r--p 00000000 fd:01 99 /opt/my lib/libx.so (deleted)
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
7fff00000000-7fff00002000 r-xp 00000000 00:00 0 [vdso]
7f0000005000-7f0000006000 r--p 00000000 00:05 77 /memfd:jit (deleted)
";
    let files = parse_maps(text);
    // memfd-backed files are kept: map_files can read them.
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[2].path, Path::new("/memfd:jit"));
    assert_eq!(files[0].path, Path::new("/usr/bin/app"));
    assert_eq!(files[0].device, "fd:01");
    assert_eq!(files[0].inode, 1234);
    assert_eq!(
        files[0].ranges,
        vec![
            0x55d0c0a00000..0x55d0c0a01000,
            0x55d0c0a01000..0x55d0c0a02000
        ]
    );
    assert_eq!(files[0].first, Some(0x55d0c0a00000..0x55d0c0a01000));
    assert_eq!(files[1].path, Path::new("/opt/my lib/libx.so"));
    // The offset-0 mapping need not come first.
    assert_eq!(files[1].first, Some(0x7f0000001000..0x7f0000002000));
}

#[test]
fn load_bias_per_elf_type() {
    assert_eq!(load_bias(elf::ET_EXEC, 0x400000, &[(0, 0x400000)]), Some(0));
    assert_eq!(
        load_bias(elf::ET_DYN, 0x7f0000000000, &[(0, 0), (0x1000, 0x1000)]),
        Some(0x7f0000000000)
    );
    // Prelinked-style ET_DYN with a nonzero first vaddr.
    assert_eq!(
        load_bias(elf::ET_DYN, 0x7f0000010000, &[(0, 0x10000)]),
        Some(0x7f0000000000)
    );
    assert_eq!(
        load_bias(elf::ET_DYN, 0x7f0000000000, &[(0x2000, 0x2000)]),
        None
    );
}

#[test]
fn executable_tls_block_offset_matches_glibc() {
    // Aligned segment start (what linkers emit): roundup(memsz, align) in every variant.
    let aligned = TlsSegment {
        vaddr: 0x3dc0,
        memsz_bytes: 172,
        align_bytes: 64,
    };
    assert_eq!(executable_tls_block_offset(aligned, false), 192);
    assert_eq!(executable_tls_block_offset(aligned, true), 192);
    // Misaligned start: glibc's dynamic loader pads so block start ≡ vaddr (mod align).
    let misaligned = TlsSegment {
        vaddr: 0x3df0,
        memsz_bytes: 100,
        align_bytes: 64,
    };
    let offset = executable_tls_block_offset(misaligned, false);
    assert_eq!(offset, 144);
    assert_eq!(offset.wrapping_neg() % 64, 0x3df0 % 64);
    assert!(offset >= 100);
    assert_eq!(executable_tls_block_offset(misaligned, true), 128);
    // p_align 0 means no constraint.
    let unaligned = TlsSegment {
        vaddr: 0x1003,
        memsz_bytes: 5,
        align_bytes: 0,
    };
    assert_eq!(executable_tls_block_offset(unaligned, false), 5);
    assert_eq!(local_exec_offset(176, aligned, false), -16);
}

#[test]
fn tlsdesc_argument_rule() {
    assert_eq!(
        classify_tlsdesc_arg((-0x40i64) as u64),
        Some(TlsdescArg::ThreadPointerOffset(-0x40))
    );
    assert_eq!(
        classify_tlsdesc_arg(0x5555_5555_a2a0),
        Some(TlsdescArg::DynamicArg(0x5555_5555_a2a0))
    );
    assert_eq!(classify_tlsdesc_arg(0), None);
    assert_eq!(classify_tlsdesc_arg(0x10), None);
    assert_eq!(classify_tlsdesc_arg((-(1i64 << 33)) as u64), None);
    assert_eq!(classify_tlsdesc_arg(1 << 60), None);
    assert!(tp_offset(0).is_err());
    assert!(tp_offset(8).is_err());
    assert_eq!(
        tp_offset((-8i64) as u64),
        Ok(TlsSlot::ThreadPointer { offset: -8 })
    );
    assert!(dtv_slot(0, 0).is_err());
    assert!(dtv_slot(0x7f00_0000_1000, 0).is_err());
    assert_eq!(
        dtv_slot(2, 0x40),
        Ok(TlsSlot::Dtv {
            module: 2,
            offset: 0x40
        })
    );
}

#[test]
fn locate_reports_missing_process() {
    assert!(matches!(locate(u32::MAX), Err(LocateError::Proc { .. })));
}

#[test]
fn locate_self_finds_nothing() {
    assert_eq!(locate(std::process::id()).unwrap(), None);
}

const LIB_C: &str = r#"
#ifndef VISIBILITY
#define VISIBILITY "default"
#endif
_Alignas(64) __thread char lib_pad[100] = {1};
__thread short lib_small = 2;
__thread void *otel_thread_ctx_v1 __attribute__((visibility(VISIBILITY)));
void *otel_ctx_addr(void) { otel_thread_ctx_v1 = (void *)0x1234; return &otel_thread_ctx_v1; }
"#;

const MAIN_C: &str = r#"
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(EXE_DEFINES)
_Alignas(64) __thread char exe_pad[100] = {1};
__thread short exe_small = 2;
__thread void *otel_thread_ctx_v1 __attribute__((visibility("default")));
static void *ctx_addr(void) { otel_thread_ctx_v1 = (void *)0x1234; return &otel_thread_ctx_v1; }
#elif defined(LINKED)
void *otel_ctx_addr(void);
static void *ctx_addr(void) { return otel_ctx_addr(); }
#elif defined(DLOPEN)
static void *(*dl_ctx_addr)(void);
static void *ctx_addr(void) { return dl_ctx_addr(); }
#else
static void *ctx_addr(void) { return 0; }
#endif

static pthread_barrier_t reported;
static void report(const char *who, void *addr) {
  unsigned long fs = 0;
  syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
  printf("%s %lx %lx\n", who, (unsigned long)addr, fs);
  fflush(stdout);
}
static void *worker(void *touch) {
  /* The barrier serialises the reports, so stdout lines never interleave. */
  report(touch ? "thread" : "idle", touch ? ctx_addr() : 0);
  pthread_barrier_wait(&reported);
  for (;;) pause();
}
int main(int argc, char **argv) {
#ifdef DLOPEN
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
  dl_ctx_addr = (void *(*)(void))dlsym(lib, "otel_ctx_addr");
#endif
  pthread_t t;
  pthread_barrier_init(&reported, 0, 2);
  report("main", ctx_addr());
  pthread_create(&t, 0, worker, (void *)1);
  pthread_barrier_wait(&reported);
  pthread_create(&t, 0, worker, 0);
  pthread_barrier_wait(&reported);
  printf("ready\n");
  fflush(stdout);
  char byte;
  return read(0, &byte, 1) < 0;
}
"#;

/// How a test program is built and run.
struct Case {
    name: &'static str,
    /// -D flag selecting where the variable comes from.
    define: &'static str,
    exe_flags: &'static [&'static str],
    /// Flags for `libctx.so`, when the program uses it.
    lib_flags: Option<&'static [&'static str]>,
    env: &'static [(&'static str, &'static str)],
}

/// A test program stopped at its "ready" line, killed on drop.
struct Running {
    child: Child,
    dir: PathBuf,
    /// (who, &otel_thread_ctx_v1 as printed, fsbase) per reporting thread.
    threads: Vec<(String, u64, u64)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gcc(args: &[&str]) {
    let output = Command::new("gcc").args(args).output().expect("gcc runs");
    assert!(
        output.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn start(case: &Case) -> Running {
    let dir =
        std::env::temp_dir().join(format!("tls-resolver-{}-{}", std::process::id(), case.name));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(path("lib.c"), LIB_C).unwrap();
    std::fs::write(path("main.c"), MAIN_C).unwrap();
    let (lib, lib_src, main, prog) = (
        path("libctx.so"),
        path("lib.c"),
        path("main.c"),
        path("prog"),
    );
    if let Some(lib_flags) = case.lib_flags {
        let mut args = vec!["-O1", "-fPIC", "-shared", "-o", &lib, &lib_src];
        args.extend(lib_flags);
        gcc(&args);
    }
    let define = format!("-D{}", case.define);
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let mut args = vec!["-O1", "-pthread", &define, "-o", &prog, &main];
    args.extend(case.exe_flags);
    if case.define == "LINKED" {
        args.extend([lib.as_str(), rpath.as_str()]);
    }
    gcc(&args);

    let child = Command::new(&prog)
        .arg(&lib)
        .envs(case.env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Owned by `Running` from here on, so that it is killed and reaped whatever happens.
    let mut running = Running {
        child,
        dir,
        threads: Vec::new(),
    };
    for line in BufReader::new(running.child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "ready" {
            return running;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        running
            .threads
            .push((fields[0].to_string(), hex(fields[1]), hex(fields[2])));
    }
    panic!("{}: program exited before it was ready", case.name);
}

/// Builds and runs the case, locates the slot and checks it against every thread's real address.
/// `idle_has_block`: whether a thread that never touched the variable already has its block.
fn check(case: Case, model: TlsModel, idle_has_block: bool) -> TlsSlot {
    let running = start(&case);
    let pid = running.child.id();
    let found = locate(pid)
        .unwrap()
        .unwrap_or_else(|| panic!("{}: not found", case.name));
    assert_eq!(found.model, model, "{}: {found:?}", case.name);
    for (who, address, fsbase) in &running.threads {
        let evaluated = slot_address(pid, *fsbase, &found.slot).unwrap();
        if who == "idle" {
            assert_eq!(
                evaluated.is_some(),
                idle_has_block,
                "{}: idle thread's block: {evaluated:?}",
                case.name
            );
            continue;
        }
        assert_eq!(
            evaluated.unwrap(),
            *address,
            "{} {who}: {found:?}",
            case.name
        );
    }
    assert_eq!(running.threads.len(), 3);
    found.slot
}

const EXPORT: &str = "-Wl,--export-dynamic-symbol=otel_thread_ctx_v1";

fn exe_case(name: &'static str, exe_flags: &'static [&'static str]) -> Case {
    Case {
        name,
        define: "EXE_DEFINES",
        exe_flags,
        lib_flags: None,
        env: &[],
    }
}

fn lib_case(name: &'static str, define: &'static str, lib_flags: &'static [&'static str]) -> Case {
    Case {
        name,
        define,
        exe_flags: &["-ldl"],
        lib_flags: Some(lib_flags),
        env: &[],
    }
}

#[test]
fn local_exec_in_non_pie_executable() {
    let slot = check(
        exe_case("exe-nopie", &["-no-pie", EXPORT]),
        TlsModel::LocalExec,
        true,
    );
    assert!(matches!(slot, TlsSlot::ThreadPointer { .. }));
}

#[test]
fn local_exec_in_pie_executable() {
    let slot = check(
        exe_case("exe-pie", &["-fPIE", "-pie", EXPORT]),
        TlsModel::LocalExec,
        true,
    );
    assert!(matches!(slot, TlsSlot::ThreadPointer { .. }));
}

#[test]
fn local_exec_in_static_pie_executable() {
    let case = exe_case("exe-static-pie", &["-static-pie", EXPORT]);
    let slot = check(case, TlsModel::LocalExec, true);
    assert!(matches!(slot, TlsSlot::ThreadPointer { .. }));
}

#[test]
fn initial_exec_in_linked_library() {
    let case = lib_case("ie-linked", "LINKED", &["-ftls-model=initial-exec"]);
    let slot = check(case, TlsModel::InitialExec, true);
    assert!(matches!(slot, TlsSlot::ThreadPointer { .. }));
}

#[test]
fn tlsdesc_in_linked_library_is_static() {
    let case = lib_case("desc-linked", "LINKED", &["-mtls-dialect=gnu2"]);
    let slot = check(case, TlsModel::Tlsdesc, true);
    assert!(matches!(slot, TlsSlot::ThreadPointer { .. }));
}

#[test]
fn tlsdesc_in_dlopened_library_uses_static_surplus() {
    // glibc places a dlopen'd TLSDESC module in the static TLS surplus when it fits.
    let case = lib_case("desc-dlopen", "DLOPEN", &["-mtls-dialect=gnu2"]);
    let slot = check(case, TlsModel::Tlsdesc, true);
    assert!(matches!(slot, TlsSlot::ThreadPointer { .. }), "{slot:?}");
}

#[test]
fn tlsdesc_in_dlopened_library_without_surplus_is_dynamic() {
    let mut case = lib_case("desc-dlopen-dyn", "DLOPEN", &["-mtls-dialect=gnu2"]);
    case.env = &[("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=0")];
    let slot = check(case, TlsModel::Tlsdesc, false);
    assert!(matches!(slot, TlsSlot::Dtv { .. }), "{slot:?}");
}

#[test]
fn general_dynamic_in_linked_library() {
    let case = lib_case("gd-linked", "LINKED", &["-mtls-dialect=gnu"]);
    let slot = check(case, TlsModel::GeneralDynamic, true);
    assert!(matches!(slot, TlsSlot::Dtv { .. }));
}

#[test]
fn general_dynamic_in_dlopened_library() {
    let case = lib_case("gd-dlopen", "DLOPEN", &["-mtls-dialect=gnu"]);
    let slot = check(case, TlsModel::GeneralDynamic, false);
    assert!(matches!(slot, TlsSlot::Dtv { .. }));
}

#[test]
fn local_dynamic_access_is_a_clear_error() {
    // A locally binding (protected) variable under local-dynamic: the module's `tls_index` has
    // no symbol (DTPMOD64 against symbol 0), which OTEP 4947 does not support.
    let flags = &[
        "-mtls-dialect=gnu",
        "-ftls-model=local-dynamic",
        "-DVISIBILITY=\"protected\"",
    ];
    let running = start(&lib_case("ld-linked", "LINKED", flags));
    match locate(running.child.id()) {
        Err(LocateError::Unresolved { path, reason }) => {
            assert!(path.ends_with("libctx.so"), "{path:?}");
            assert!(reason.contains("local-dynamic"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn program_without_symbol_is_none() {
    let running = start(&lib_case("none", "NONE", &[]));
    assert_eq!(locate(running.child.id()).unwrap(), None);
}
