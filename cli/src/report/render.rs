//! Renderings of a [`Table`]: aligned terminal text, Markdown, LaTeX (booktabs), CSV and JSON.
//! Display formats show percentages for [0, 1] scores and mark each column's best cell; CSV and
//! JSON keep raw values.

use super::table::{Cell, Column, ColumnKind, Table};

/// Output format of `sftctl report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Terminal,
    Markdown,
    Latex,
    Csv,
    Json,
}

/// Renders `t` in `f`.
pub fn render(t: &Table, f: Format) -> String {
    match f {
        Format::Terminal => terminal(t),
        Format::Markdown => markdown(t),
        Format::Latex => latex(t),
        Format::Csv => csv(t),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(t).expect("a table serializes");
            s.push('\n');
            s
        }
    }
}

/// A number of samples, short: `950`, `12.8k`, `3.07M`.
pub fn samples_text(x: f64) -> String {
    let a = x.abs();
    if a < 1e3 {
        format!("{x:.0}")
    } else if a < 1e6 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{:.2}M", x / 1e6)
    }
}

fn number(c: &Column, x: f64) -> String {
    match c.kind {
        ColumnKind::SamplesToPeak => samples_text(x),
        ColumnKind::Score if c.percent => format!("{:.1}", x * 100.0),
        ColumnKind::Score => format!("{x:.3}"),
    }
}

/// `mean ± std` (`pm` is the plus-minus sign to use); `-` when there is no value; `(n=k)` when
/// fewer runs than the row counts had a value.
fn cell_text(c: &Column, cell: &Cell, counted: usize, pm: &str) -> String {
    let Some(m) = cell.mean else {
        return "-".into();
    };
    let mut s = number(c, m);
    if let Some(sd) = cell.std {
        s.push_str(pm);
        s.push_str(&number(c, sd));
    }
    if cell.n < counted {
        s.push_str(&format!(" (n={})", cell.n));
    }
    s
}

fn header(t: &Table) -> Vec<String> {
    let mut h: Vec<String> = t.row_axes.clone();
    h.push("runs".into());
    for c in &t.columns {
        let mut l = c.label.clone();
        if c.percent {
            l.push_str(" %");
        }
        h.push(l);
    }
    h
}

/// Cells as text; `mark` decorates a best cell.
fn body(t: &Table, pm: &str, mark: &dyn Fn(String) -> String) -> Vec<Vec<String>> {
    t.rows
        .iter()
        .map(|r| {
            let mut line: Vec<String> = r.axes.iter().map(|(_, v)| v.clone()).collect();
            line.push(format!("{}/{}", r.counted, r.total));
            for (c, cell) in t.columns.iter().zip(&r.cells) {
                let s = cell_text(c, cell, r.counted, pm);
                line.push(if cell.best { mark(s) } else { s });
            }
            line
        })
        .collect()
}

fn terminal(t: &Table) -> String {
    let h = header(t);
    let b = body(t, " ± ", &|s| format!("{s} *"));
    let n_axes = t.row_axes.len();
    let mut w: Vec<usize> = h.iter().map(|s| s.chars().count()).collect();
    for line in &b {
        for (i, s) in line.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let fmt = |line: &[String]| {
        let cols: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let pad = w[i] - s.chars().count();
                if i < n_axes {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        cols.join("  ").trim_end().to_string()
    };
    let mut out = format!("checkpoint: {}\n", t.checkpoint.as_str());
    out.push_str(&fmt(&h));
    out.push('\n');
    out.push_str(
        &w.iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for line in &b {
        out.push_str(&fmt(line));
        out.push('\n');
    }
    out
}

fn markdown(t: &Table) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let h = header(t);
    let n_axes = t.row_axes.len();
    let mut out = format!(
        "| {} |\n|",
        h.iter().map(|s| esc(s)).collect::<Vec<_>>().join(" | ")
    );
    for i in 0..h.len() {
        out.push_str(if i < n_axes { " --- |" } else { " ---: |" });
    }
    out.push('\n');
    for line in body(t, " ± ", &|s| format!("**{s}**")) {
        out.push_str(&format!(
            "| {} |\n",
            line.iter().map(|s| esc(s)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

/// Escapes LaTeX's special characters in plain text.
pub fn latex_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => o.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                o.push('\\');
                o.push(ch);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            _ => o.push(ch),
        }
    }
    o
}

fn latex(t: &Table) -> String {
    let h = header(t);
    let n_axes = t.row_axes.len();
    let spec: String = (0..h.len())
        .map(|i| if i < n_axes { 'l' } else { 'r' })
        .collect();
    let mut out = String::new();
    out.push_str(&format!(
        "% sftctl report, checkpoint: {}; needs \\usepackage{{booktabs}}\n",
        t.checkpoint.as_str()
    ));
    out.push_str(&format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n"));
    out.push_str(
        &h.iter()
            .map(|s| latex_escape(s))
            .collect::<Vec<_>>()
            .join(" & "),
    );
    out.push_str(" \\\\\n\\midrule\n");
    for line in body(t, "\u{1}", &|s| format!("\u{2}{s}\u{3}")) {
        let cells: Vec<String> = line
            .iter()
            .map(|s| {
                latex_escape(s)
                    .replace('\u{1}', " $\\pm$ ")
                    .replace('\u{2}', "\\textbf{")
                    .replace('\u{3}', "}")
            })
            .collect();
        out.push_str(&cells.join(" & "));
        out.push_str(" \\\\\n");
    }
    out.push_str("\\bottomrule\n\\end{tabular}\n");
    out
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv(t: &Table) -> String {
    let mut h: Vec<String> = t.row_axes.clone();
    h.extend(["runs_counted".into(), "runs_total".into()]);
    for c in &t.columns {
        for part in ["mean", "std", "n", "best"] {
            h.push(format!("{} {part}", c.label));
        }
    }
    let opt = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_default();
    let mut out = h.iter().map(|s| csv_field(s)).collect::<Vec<_>>().join(",");
    out.push('\n');
    for r in &t.rows {
        let mut line: Vec<String> = r.axes.iter().map(|(_, v)| v.clone()).collect();
        line.push(r.counted.to_string());
        line.push(r.total.to_string());
        for cell in &r.cells {
            line.push(opt(cell.mean));
            line.push(opt(cell.std));
            line.push(cell.n.to_string());
            line.push(cell.best.to_string());
        }
        out.push_str(
            &line
                .iter()
                .map(|s| csv_field(s))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// The runs left out of the table, one line each (for stderr, or under a Markdown table).
pub fn excluded_text(t: &Table) -> String {
    let mut out = String::new();
    for e in &t.excluded {
        out.push_str(&format!(
            "not counted: {} ({}) {}{}{}\n",
            e.name,
            e.run_id,
            e.outcome.as_str(),
            if e.detail.is_empty() { "" } else { ": " },
            e.detail
        ));
    }
    out
}
