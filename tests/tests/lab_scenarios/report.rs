//! The lab's HTML report in Chromium.

use std::path::PathBuf;

use culprit_lab::report::browser;

use super::*;

#[test]
fn the_html_report_renders_one_chart_per_scenario_in_chromium() -> anyhow::Result<()> {
    let (runs, outputs) = lab().as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Tall enough for the scenario table and the first four scenarios' charts.
    let page = browser::load(&outputs.html, 1200, 4400)?;
    assert!(
        page.console.is_empty(),
        "the report logged to the console: {:#?}",
        page.console
    );
    for run in runs {
        let marker = format!(
            "<figure class=\"chart\" data-scenario=\"{}\"><svg",
            run.scenario
        );
        assert!(page.dom.contains(&marker), "no chart for {}", run.scenario);
    }
    assert_eq!(
        page.dom.matches("<figure class=\"chart\"").count(),
        runs.len()
    );
    // The plots really are on screen: each kernel cause's colour fills part of the picture.
    let counts = colour_counts(&page.screenshot)?;
    for (name, rgb) in [
        ("cpu.contention", [230, 85, 13]),
        ("cpu.throttling", [117, 107, 177]),
        ("tcp.retransmit", [49, 163, 84]),
        ("on_cpu", [70, 130, 180]),
    ] {
        let n = counts.get(&rgb).copied().unwrap_or(0);
        assert!(n > 2000, "{name}'s colour covers only {n} pixels");
    }
    Ok(())
}

#[test]
fn the_console_check_catches_a_broken_page() -> anyhow::Result<()> {
    // The control for the test above: a page with a script error must be caught.
    let dir = std::env::temp_dir().join(format!("culprit-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let page: PathBuf = dir.join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>",
    )?;
    let load = browser::load(&page, 400, 300)?;
    assert!(
        load.console.iter().any(|l| l.contains("undefinedFunction")),
        "{:?}",
        load.console
    );
    Ok(())
}

fn colour_counts(png: &std::path::Path) -> anyhow::Result<std::collections::HashMap<[u8; 3], u64>> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png)?));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    let mut counts = std::collections::HashMap::new();
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        *counts.entry([px[0], px[1], px[2]]).or_insert(0) += 1;
    }
    Ok(counts)
}
