//! What a lab run shows its reader: the text printed per scenario with its verdict, the
//! accuracy table of ACCURACY.md, the HTML report, and the headless-Chromium check of that
//! report.

pub mod browser;
pub(crate) mod html_report;
pub mod present;
