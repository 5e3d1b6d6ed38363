use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds the kernel-side programs for the bpf target on the nightly toolchain; the agent embeds
/// the resulting object. With the `fuzzing` feature (the fuzz targets, built with sanitizers
/// for the host only) the object is empty: nothing is loaded, and no bpf-linker is needed.
fn main() -> anyhow::Result<()> {
    if std::env::var_os("CARGO_FEATURE_FUZZING").is_some() {
        let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR is not set")?;
        std::fs::write(std::path::Path::new(&out_dir).join("culprit"), [])
            .context("writing the empty eBPF object")?;
        println!("cargo:rerun-if-changed=build.rs");
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading workspace metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "culprit-ebpf")
        .ok_or_else(|| anyhow!("culprit-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the eBPF programs failed; `cargo xtask setup` installs rust-src and bpf-linker",
    )
}
