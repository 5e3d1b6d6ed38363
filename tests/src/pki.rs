//! A private PKI for the TLS tests, made with the openssl command: a CA, a server certificate
//! it signs for `localhost` and 127.0.0.1, and a client certificate for mutual TLS.

use std::{path::Path, process::Command};

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A key and a certificate signing request for `cn`.
fn request(dir: &Path, name: &str, cn: &str) -> anyhow::Result<()> {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out",
            &csr,
        ],
    )
}

/// `<name>.pem`, signed by the CA in `dir`, with the extensions in `ext`.
fn sign(dir: &Path, name: &str, ext: &str) -> anyhow::Result<()> {
    let (csr, pem, ext_file) = (
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&ext_file), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &pem,
        ],
    )
}

/// In `dir`: `ca.pem` (and its key), `server.pem`/`server.key` for `localhost` and 127.0.0.1,
/// and `client.pem`/`client.key` for client authentication.
pub fn make(dir: &Path) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=culprit test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    )?;
    request(dir, "server", "localhost")?;
    sign(
        dir,
        "server",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    request(dir, "client", "culprit test sender")?;
    sign(dir, "client", "extendedKeyUsage=clientAuth\n")
}
