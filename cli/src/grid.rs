//! Grid expansion: each `[grid]` axis is a list of values; `[[grid.zip]]` ties axes of equal
//! length together; `[[grid.exclude]]` drops combinations. The result is the cartesian product
//! of the groups, in a deterministic order, with every value checked against its key.

use crate::spec::{Source, SpecError, Val, check_value};
use std::collections::BTreeMap;
use toml::Spanned;

/// The most points a grid may have before exclusions (each becomes a run with its own script).
pub const MAX_POINTS: usize = 100_000;

/// One grid point: the value of every axis.
pub type Point = BTreeMap<String, Val>;

/// A group of axes that vary together (a plain axis is a group of one).
struct Group {
    keys: Vec<String>,
    rows: Vec<Vec<Val>>,
}

fn values(
    src: &Source,
    key: &str,
    v: &toml::Value,
    span: std::ops::Range<usize>,
) -> Result<Vec<Val>, SpecError> {
    let toml::Value::Array(items) = v else {
        return Err(src.error(
            Some(span),
            format!("grid axis `{key}` must be a list of values, e.g. `{key} = [1, 2]`"),
        ));
    };
    if items.is_empty() {
        return Err(src.error(
            Some(span),
            format!("grid axis `{key}` is empty: the grid would have no runs"),
        ));
    }
    items
        .iter()
        .map(|i| check_value(key, i).map_err(|m| src.error(Some(span.clone()), m)))
        .collect()
}

/// Expands the grid of a spec. No `[grid]` gives one point with no axes.
pub fn expand(
    src: &Source,
    grid: Option<&Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
) -> Result<Vec<Point>, SpecError> {
    let Some(grid) = grid else {
        return Ok(vec![Point::new()]);
    };
    let mut groups: Vec<Group> = Vec::new();
    type Exclude = (BTreeMap<String, Vec<Val>>, std::ops::Range<usize>);
    let mut excludes: Vec<Exclude> = Vec::new();
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut claim = |key: &str, span: std::ops::Range<usize>| {
        if seen.insert(key.to_owned(), ()).is_some() {
            Err(src.error(
                Some(span),
                format!("grid axis `{key}` appears twice (plain and in a zip, or in two zips)"),
            ))
        } else {
            Ok(())
        }
    };
    for (key, v) in grid.get_ref() {
        let span = v.span();
        match key.as_str() {
            "zip" | "exclude" => {
                let toml::Value::Array(tables) = v.get_ref() else {
                    return Err(src.error(
                        Some(span),
                        format!("`grid.{key}` must be an array of tables (`[[grid.{key}]]`)"),
                    ));
                };
                for t in tables {
                    let toml::Value::Table(t) = t else {
                        return Err(src.error(
                            Some(span.clone()),
                            format!("`grid.{key}` must be an array of tables (`[[grid.{key}]]`)"),
                        ));
                    };
                    if key == "zip" {
                        let mut g = Group {
                            keys: Vec::new(),
                            rows: Vec::new(),
                        };
                        let mut cols = Vec::new();
                        for (k, vals) in t {
                            claim(k, span.clone())?;
                            g.keys.push(k.clone());
                            cols.push(values(src, k, vals, span.clone())?);
                        }
                        let n = cols.first().map_or(0, Vec::len);
                        if cols.is_empty() {
                            return Err(src.error(Some(span), "a `[[grid.zip]]` table has no axes"));
                        }
                        if let Some((k, c)) = g.keys.iter().zip(&cols).find(|(_, c)| c.len() != n) {
                            return Err(src.error(Some(span), format!(
                                "zipped axes must have equal lengths: `{}` has {n} values, `{k}` has {}", g.keys[0], c.len())));
                        }
                        g.rows = (0..n)
                            .map(|i| cols.iter().map(|c| c[i].clone()).collect())
                            .collect();
                        groups.push(g);
                    } else {
                        let mut ex = BTreeMap::new();
                        for (k, val) in t {
                            let vals = match val {
                                toml::Value::Array(_) => values(src, k, val, span.clone())?,
                                one => vec![
                                    check_value(k, one)
                                        .map_err(|m| src.error(Some(span.clone()), m))?,
                                ],
                            };
                            ex.insert(k.clone(), vals);
                        }
                        excludes.push((ex, span.clone()));
                    }
                }
            }
            _ => {
                claim(key, span.clone())?;
                let rows = values(src, key, v.get_ref(), span)?
                    .into_iter()
                    .map(|v| vec![v])
                    .collect();
                groups.push(Group {
                    keys: vec![key.clone()],
                    rows,
                });
            }
        }
    }
    if groups.is_empty() {
        return Err(src.error(Some(grid.span()), "`[grid]` has no axes: the grid would have no runs\nhint: remove `[grid]` for a single run"));
    }
    for (ex, span) in &excludes {
        if let Some(k) = ex.keys().find(|k| !seen.contains_key(*k)) {
            return Err(src.error(
                Some(span.clone()),
                format!("`[[grid.exclude]]` names `{k}`, which is not a grid axis"),
            ));
        }
    }
    // Checked before expanding: a forged spec (eight axes of a hundred values) must be an
    // error, not an allocation of 10^16 points.
    let total = groups
        .iter()
        .try_fold(1usize, |n, g| n.checked_mul(g.rows.len()))
        .filter(|&n| n <= MAX_POINTS);
    if total.is_none() {
        return Err(src.error(
            Some(grid.span()),
            format!("the grid has more than {MAX_POINTS} points before exclusions\nhint: split the sweep"),
        ));
    }
    let mut points = vec![Point::new()];
    for g in &groups {
        let mut next = Vec::with_capacity(points.len() * g.rows.len());
        for p in &points {
            for row in &g.rows {
                let mut q = p.clone();
                for (k, v) in g.keys.iter().zip(row) {
                    q.insert(k.clone(), v.clone());
                }
                next.push(q);
            }
        }
        points = next;
    }
    points.retain(|p| {
        !excludes
            .iter()
            .any(|(ex, _)| ex.iter().all(|(k, vals)| vals.contains(&p[k])))
    });
    if points.is_empty() {
        return Err(src.error(
            Some(grid.span()),
            "every grid point is excluded: the grid has no runs",
        ));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;
    use std::path::Path;

    fn grid(body: &str) -> Result<Vec<Point>, SpecError> {
        let text = format!("[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n{body}");
        let s = Spec::parse(Path::new("g.toml"), text)?;
        expand(&s.source, s.grid.as_ref())
    }

    fn show(points: &[Point]) -> Vec<String> {
        points
            .iter()
            .map(|p| {
                p.iter()
                    .map(|(k, v)| format!("{k}={}", v.short()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn expansion_table() {
        let table: &[(&str, &[&str])] = &[
            ("", &[""]),
            ("[grid]\nlr = [1e-5, 2e-5]\n", &["lr=1e-5", "lr=2e-5"]),
            (
                "[grid]\nlr = [1e-5, 2e-5]\nseed = [0, 1]\n",
                &[
                    "lr=1e-5,seed=0",
                    "lr=1e-5,seed=1",
                    "lr=2e-5,seed=0",
                    "lr=2e-5,seed=1",
                ],
            ),
            (
                "[grid]\nseed = [0, 1]\n[[grid.zip]]\nbatch_size = [8, 16]\nwarmup_steps = [10, 20]\n",
                &[
                    "batch_size=8,seed=0,warmup_steps=10",
                    "batch_size=16,seed=0,warmup_steps=20",
                    "batch_size=8,seed=1,warmup_steps=10",
                    "batch_size=16,seed=1,warmup_steps=20",
                ],
            ),
            (
                "[grid]\nlr = [1e-5, 2e-5]\nseed = [0, 1]\n[[grid.exclude]]\nlr = 1e-5\nseed = 1\n",
                &["lr=1e-5,seed=0", "lr=2e-5,seed=0", "lr=2e-5,seed=1"],
            ),
            (
                "[grid]\nlr = [1e-5, 2e-5, 3e-5]\n[[grid.exclude]]\nlr = [1e-5, 0.00003]\n",
                &["lr=2e-5"],
            ),
            ("[grid]\nlr = [1, 2.5]\n", &["lr=1.0", "lr=2.5"]),
        ];
        for (body, want) in table {
            assert_eq!(show(&grid(body).unwrap()), *want, "{body}");
        }
    }

    #[test]
    fn bad_grids() {
        let table: &[(&str, &str)] = &[
            ("[grid]\nlr = []\n", "grid axis `lr` is empty"),
            ("[grid]\n", "has no axes"),
            ("[grid]\nlr = 1e-5\n", "must be a list"),
            ("[grid]\nlr = [1e-5, -1e-5]\n", "`lr` must be > 0"),
            ("[grid]\nlearning_rate = [1]\n", "unknown hyperparameter"),
            (
                "[grid]\n[[grid.zip]]\nlr = [1e-5]\nseed = [0, 1]\n",
                "equal lengths",
            ),
            (
                "[grid]\nlr = [1e-5]\n[[grid.exclude]]\nlr = 1e-5\n",
                "every grid point is excluded",
            ),
            (
                "[grid]\nlr = [1e-5]\n[[grid.exclude]]\nseed = 1\n",
                "not a grid axis",
            ),
            (
                "[grid]\nlr = [1e-5]\n[[grid.zip]]\nlr = [1e-5]\n",
                "appears twice",
            ),
        ];
        for (body, needle) in table {
            let e = grid(body).unwrap_err();
            assert!(e.message.contains(needle), "{body}: {e}");
            assert!(e.line >= 5, "{body}: {e}");
        }
    }
}
