//! The self-contained HTML report of a sweep: the table, the runs left out, and inline SVG
//! charts of loss and gradient norm per group and per run. No scripts, no external resources,
//! so it opens offline and anywhere.

use super::render::{Format, render};
use super::table::Table;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The table as an HTML `<table>`, best cells in bold.
fn table_html(t: &Table) -> String {
    // The CSV rendering has raw values; the HTML shows the Markdown rendering's display text.
    let md = render(t, Format::Markdown);
    let mut out = String::from("<table>\n");
    for (i, line) in md.lines().enumerate() {
        if i == 1 {
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .split(" | ")
            .collect();
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for c in cells {
            let c = c.trim().replace("\\|", "|");
            let body = match c.strip_prefix("**").and_then(|x| x.strip_suffix("**")) {
                Some(b) => format!("<b>{}</b>", esc(b)),
                None => esc(&c),
            };
            out.push_str(&format!("<{tag}>{body}</{tag}>"));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// A whole page: `sections` are `(heading, inline SVG)` pairs.
pub fn page(
    sweep: &str,
    t: &Table,
    excluded: &str,
    early: Option<&str>,
    sections: &[(String, String)],
) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>sftctl report: {s}</title>\n<style>\nbody{{font-family:sans-serif;margin:2em;color:#222}}\ntable{{border-collapse:collapse;margin:1em 0}}\nth,td{{padding:.3em .8em;border-bottom:1px solid #ccc;text-align:right}}\nth:first-child,td:first-child{{text-align:left}}\nth{{border-bottom:2px solid #333}}\npre{{background:#f6f6f6;padding:1em}}\nfigure{{display:inline-block;margin:.5em}}\n</style>\n</head>\n<body>\n<h1>Sweep <code>{s}</code></h1>\n<p>Checkpoint counted: <b>{c}</b>. Cells: mean ± standard deviation over the runs of a row; the best cell of each score column is in bold; scores in [0, 1] are shown as percentages.</p>\n",
        s = esc(sweep),
        c = t.checkpoint.as_str()
    );
    out.push_str(&table_html(t));
    if !excluded.is_empty() {
        out.push_str(&format!(
            "<h2>Runs not counted</h2>\n<pre>{}</pre>\n",
            esc(excluded)
        ));
    }
    if let Some(e) = early {
        out.push_str(&format!("<h2>Early dynamics</h2>\n<pre>{}</pre>\n", esc(e)));
    }
    for (h, svg) in sections {
        out.push_str(&format!(
            "<figure><figcaption>{}</figcaption>\n{svg}\n</figure>\n",
            esc(h)
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}
