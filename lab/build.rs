//! Builds the OTEP 4947 thread-context writer (`native/thread_context.c`): into the lab binary,
//! its variable exported in the dynamic symbol table as the spec requires, and as shared
//! libraries in the TLSDESC and legacy general-dynamic dialects for apps that load it at run
//! time (the Python apps, through ctypes).

use std::{env, path::PathBuf};

const SOURCE: &str = "native/thread_context.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    cc::Build::new()
        .file(SOURCE)
        .flag("-fPIC")
        .compile("culprit_lab_thread_ctx");
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let compiler = cc::Build::new().get_compiler();
    for (dialect, name) in [("gnu2", "tlsdesc"), ("gnu", "gd")] {
        let library = out.join(format!("libotel_thread_ctx_{name}.so"));
        let status = compiler
            .to_command()
            .args(["-shared", "-fPIC", "-O2"])
            .arg(format!("-mtls-dialect={dialect}"))
            .arg("-o")
            .arg(&library)
            .arg(SOURCE)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("building {}: {other:?}", library.display()),
        }
    }
}
