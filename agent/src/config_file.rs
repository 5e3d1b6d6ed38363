//! `culprit agent --config FILE`: flags kept in a file (a Kubernetes ConfigMap), one per line,
//! `--flag value` or `--flag`; `#` starts a comment. Flags given on the command line after
//! `--config` win, since clap keeps the last value of a repeated flag.

use std::{ffi::OsString, path::Path};

use anyhow::Context as _;

/// The flags in a config file's text.
pub(crate) fn parse(text: &str) -> Vec<OsString> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(before, _)| before).trim())
        .filter(|l| !l.is_empty())
        .flat_map(|l| match l.split_once(char::is_whitespace) {
            Some((flag, value)) => vec![flag.into(), value.trim().into()],
            None => vec![l.into()],
        })
        .collect()
}

/// Replaces `--config FILE` (or `--config=FILE`) in `args` with the file's flags.
pub(crate) fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let path = if arg == "--config" {
            Some(
                iter.next()
                    .context("--config needs a file (flags, one per line)")?,
            )
        } else {
            arg.to_str()
                .and_then(|s| s.strip_prefix("--config="))
                .map(OsString::from)
        };
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(Path::new(&p))
                    .with_context(|| format!("reading the config file {}", p.to_string_lossy()))?;
                out.extend(parse(&text));
            }
            None => out.push(arg),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn lines_become_flags_and_comments_vanish() {
        let text =
            "# the agent\n--interval 5\n\n--no-otlp   # kernel only\n--otlp-http   0.0.0.0:4318 \n";
        assert_eq!(
            strs(&parse(text)),
            [
                "--interval",
                "5",
                "--no-otlp",
                "--otlp-http",
                "0.0.0.0:4318"
            ]
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn the_file_replaces_the_flag_in_place() {
        let dir = std::env::temp_dir().join(format!("culprit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.conf");
        std::fs::write(&file, "--interval 5\n--top 3\n").unwrap();
        let args: Vec<OsString> = ["culprit", "agent", "--config"]
            .into_iter()
            .map(OsString::from)
            .chain([file.clone().into_os_string(), "--top".into(), "9".into()])
            .collect();
        assert_eq!(
            strs(&expand(args).unwrap()),
            [
                "culprit",
                "agent",
                "--interval",
                "5",
                "--top",
                "3",
                "--top",
                "9"
            ]
        );
        let eq = vec![OsString::from(format!("--config={}", file.display()))];
        assert_eq!(
            strs(&expand(eq).unwrap()),
            ["--interval", "5", "--top", "3"]
        );
        let missing = expand(vec!["--config".into(), "/nonexistent".into()]).unwrap_err();
        assert!(format!("{missing:#}").contains("/nonexistent"));
        assert!(expand(vec!["--config".into()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
