//! The kernels of the VM matrix: Debian's own packages, fetched once and cached under
//! `target/vm/`, unpacked, and their modules made visible where the VM tool looks for them
//! (`/usr/lib/modules/<release>`, a link into the unpacked package).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::shell::{self, output, root};

/// Where a kernel package comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// This machine's apt (Debian 12 and its security updates).
    Apt,
    /// A Debian suite's package index this machine's apt is not configured for.
    Index(&'static str),
}

/// A kernel of the matrix: the newest package named `<prefix><number><suffix>`.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    pub label: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    source: Source,
}

/// Debian 12's kernel (6.1, also Amazon Linux 2023's and COS's series), Debian 12's backport of
/// 6.12 (Debian 13's), and Debian 13's backport of 6.18 (the host kernel's series).
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64-unsigned",
        source: Source::Apt,
    },
    KernelSpec {
        label: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64-unsigned",
        source: Source::Apt,
    },
    KernelSpec {
        label: "6.18",
        prefix: "linux-image-6.18.",
        suffix: "+deb13-amd64",
        source: Source::Index(
            "http://deb.debian.org/debian/dists/trixie-backports/main/binary-amd64/Packages.xz",
        ),
    },
];

/// An unpacked kernel, ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub vmlinuz: PathBuf,
}

fn vm_dir() -> PathBuf {
    root().join("target/vm")
}

/// The number between `prefix` and `suffix` of a package name, if the name has that shape.
fn series_number(spec: &KernelSpec, name: &str) -> Option<u64> {
    let middle = name.strip_prefix(spec.prefix)?.strip_suffix(spec.suffix)?;
    if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    middle.parse().ok()
}

/// The newest package of `spec`'s series among `names`.
fn newest<'a>(spec: &KernelSpec, names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .filter_map(|n| series_number(spec, n).map(|v| (v, n)))
        .max()
        .map(|(_, n)| n.to_string())
}

/// `(Package, Filename, SHA256)` of every stanza of a Debian `Packages` index.
fn index_entries(index: &str) -> Vec<(String, String, String)> {
    index
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                    .map(str::to_string)
            };
            Some((field("Package")?, field("Filename")?, field("SHA256")?))
        })
        .collect()
}

/// The `.deb` of `spec`, downloaded into `target/vm/debs` unless it is there already.
fn fetch_deb(spec: &KernelSpec) -> anyhow::Result<PathBuf> {
    let debs = vm_dir().join("debs");
    fs::create_dir_all(&debs)?;
    let cached = |package: &str| -> Option<PathBuf> {
        fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
    };
    match spec.source {
        Source::Apt => {
            let names = || -> anyhow::Result<Option<String>> {
                let list = output(Command::new("apt-cache").args(["pkgnames", spec.prefix]))?;
                Ok(newest(spec, list.lines()))
            };
            let package = match names()? {
                Some(p) => p,
                None => {
                    shell::run(Command::new("apt-get").arg("update"))?;
                    names()?.with_context(|| {
                        format!("apt knows no {}<n>{} package", spec.prefix, spec.suffix)
                    })?
                }
            };
            if let Some(deb) = cached(&package) {
                return Ok(deb);
            }
            shell::run(
                Command::new("apt-get")
                    .args(["download", &package])
                    .current_dir(&debs),
            )?;
            cached(&package).with_context(|| format!("apt-get download {package} left no .deb"))
        }
        Source::Index(url) => {
            let index = output(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("curl -fsS --retry 3 '{url}' | xz -dc")),
            )
            .with_context(|| format!("reading the package index {url}"))?;
            let entries = index_entries(&index);
            let package = newest(spec, entries.iter().map(|(p, _, _)| p.as_str()))
                .with_context(|| format!("{url} lists no {}<n>{}", spec.prefix, spec.suffix))?;
            if let Some(deb) = cached(&package) {
                return Ok(deb);
            }
            let (_, filename, sha256) = entries
                .iter()
                .find(|(p, _, _)| *p == package)
                .expect("the package was found in these entries");
            let base = url.split("/dists/").next().unwrap_or(url);
            let name = Path::new(filename)
                .file_name()
                .context("a package file name")?;
            let deb = debs.join(name);
            let partial = deb.with_extension("partial");
            shell::run(
                Command::new("curl")
                    .args(["-fsS", "--retry", "3", "-o"])
                    .arg(&partial)
                    .arg(format!("{base}/{filename}")),
            )?;
            let sum = output(Command::new("sha256sum").arg(&partial))?;
            if sum.split_whitespace().next() != Some(sha256.as_str()) {
                fs::remove_file(&partial).ok();
                bail!("{filename}: SHA256 differs from the index's {sha256}");
            }
            fs::rename(&partial, &deb)?;
            Ok(deb)
        }
    }
}

/// Fetches, unpacks and installs the modules of `spec`'s kernel.
pub fn prepare(spec: &KernelSpec) -> anyhow::Result<Kernel> {
    let deb = fetch_deb(spec)?;
    let package = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').next())
        .context("package name")?
        .to_string();
    let unpacked = vm_dir().join("kernels").join(&package);
    let stamp = unpacked.join(".unpacked");
    if !stamp.exists() {
        fs::remove_dir_all(&unpacked).ok();
        fs::create_dir_all(&unpacked)?;
        shell::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        fs::write(&stamp, "")?;
    }
    let vmlinuz = fs::read_dir(unpacked.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("kernel release")?
        .to_string();
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| unpacked.join(d).join(&release))
        .find(|d| d.is_dir())
        .with_context(|| format!("no modules for {release} in {}", deb.display()))?;
    install_modules(&release, &modules)?;
    Ok(Kernel {
        package,
        release,
        vmlinuz,
    })
}

/// The VM boots over the host's root filesystem: its `modprobe` looks in
/// `/usr/lib/modules/<release>`, linked here to the unpacked package (which the host's own
/// kernel never reads: its release differs).
fn install_modules(release: &str, modules: &Path) -> anyhow::Result<()> {
    let link = Path::new("/usr/lib/modules").join(release);
    fs::create_dir_all("/usr/lib/modules")?;
    if fs::read_link(&link).ok().as_deref() != Some(modules) {
        if link.is_dir() && fs::read_link(&link).is_err() {
            // A real installation of this kernel: use it as it is.
        } else {
            fs::remove_file(&link).ok();
            std::os::unix::fs::symlink(modules, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    if !modules.join("modules.dep").exists() {
        shell::run(Command::new("depmod").args(["-a", release]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_of_a_series_is_chosen_by_number_not_text() {
        let spec = KERNELS[0];
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "linux-image-6.1.0-57-rt-amd64-unsigned",
            "linux-image-6.1.0-100-amd64",
            "linux-image-6.12.118+deb12-amd64-unsigned",
        ];
        assert_eq!(
            newest(&spec, names.into_iter()).as_deref(),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
        let spec = KERNELS[1];
        assert_eq!(
            newest(&spec, names.into_iter()).as_deref(),
            Some("linux-image-6.12.118+deb12-amd64-unsigned")
        );
        assert_eq!(newest(&KERNELS[2], names.into_iter()), None);
    }

    #[test]
    fn package_index_stanzas_give_name_file_and_digest() {
        let index = "Package: linux-image-6.18.12+deb13-amd64\nVersion: 6.18.12-1~bpo13+1\n\
                     Filename: pool/main/l/x.deb\nSize: 1\nSHA256: abc\n\n\
                     Package: broken\nVersion: 1\n";
        assert_eq!(
            index_entries(index),
            [(
                "linux-image-6.18.12+deb13-amd64".to_string(),
                "pool/main/l/x.deb".to_string(),
                "abc".to_string()
            )]
        );
    }
}
