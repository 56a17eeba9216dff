//! The systems of one run, each started on first use and stopped when the
//! lab is dropped, and the loop that runs a scenario on each of them.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::report::{Row, Scenario};

/// Raised when a piece a figure needs is missing (not built, not installed); the figure is then reported as
/// "not available" rather than failed.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// A system that starts on first use.
pub enum Slot<T> {
    Off,
    Idle(Box<dyn FnOnce() -> Result<T>>),
    Ready(T),
    Missing(String),
    Broken(String),
}

impl<T> Slot<T> {
    pub fn lazy(start: impl FnOnce() -> Result<T> + 'static) -> Slot<T> {
        Slot::Idle(Box::new(start))
    }

    /// The running system, starting it if needed; otherwise the rows every test gets instead.
    fn get(&mut self, name: &str, tests: &[&str]) -> Result<&mut T, Vec<Row>> {
        if matches!(self, Slot::Idle(_)) {
            if let Slot::Idle(start) = std::mem::replace(self, Slot::Off) {
                eprintln!("starting {name}");
                *self = match start() {
                    Ok(sys) => Slot::Ready(sys),
                    Err(e) => match e.downcast_ref::<Unavailable>() {
                        Some(u) => Slot::Missing(u.0.clone()),
                        None => Slot::Broken(format!("could not start: {e:#}")),
                    },
                };
            }
        }
        match self {
            Slot::Ready(sys) => Ok(sys),
            Slot::Missing(why) => Err(tests.iter().map(|t| Row::not_available(t, name, why.clone())).collect()),
            Slot::Broken(why) => {
                let err = anyhow::anyhow!("{why}");
                Err(tests.iter().map(|t| Row::failed(t, name, &err)).collect())
            }
            Slot::Off | Slot::Idle(_) => Err(Vec::new()),
        }
    }
}

/// Runs `measure` on the system in `slot` and adds its rows to `sc`; a system that is off adds nothing, one
/// that is missing or fails adds a row per test saying so.
pub fn measure<T>(
    sc: &mut Scenario,
    tests: &[&str],
    name: &str,
    slot: &mut Slot<T>,
    measure: impl FnOnce(&mut T) -> Result<Vec<Row>>,
) {
    let rows = match slot.get(name, tests) {
        Err(rows) => rows,
        Ok(sys) => {
            eprintln!("  {}. {}: {name}", sc.number, sc.title);
            match measure(sys) {
                Ok(rows) => rows,
                Err(e) => match e.downcast_ref::<Unavailable>() {
                    Some(u) => tests.iter().map(|t| Row::not_available(t, name, u.0.clone())).collect(),
                    None => {
                        eprintln!("  failed: {e:#}");
                        tests.iter().map(|t| Row::failed(t, name, &e)).collect()
                    }
                },
            }
        }
    };
    sc.rows.extend(rows);
}

/// A fresh directory for one system under the run's temp root.
pub fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
