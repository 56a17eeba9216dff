//! Two `filesync` sync agents, each with its own home and folder: A's on node
//! 1 and B's on node 2, syncing one workspace that A's user owns and shares
//! with B's user.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::filesync::stack::{binary, Stack};
use crate::mirror::Mirror;

pub struct Agents {
    a_dir: PathBuf,
    b_dir: PathBuf,
}

impl Agents {
    pub fn start(_root: &Path, bins: &Path, stack: &Stack) -> Result<Agents> {
        stack.nodes()?;
        binary(bins, "filesync")?;
        Err(crate::lab::Unavailable("the harness does not drive the filesync agent yet".into()).into())
    }
}

impl Mirror for Agents {
    fn name(&self) -> String {
        "filesync".into()
    }

    fn source(&self) -> &Path {
        &self.a_dir
    }

    fn target(&self) -> &Path {
        &self.b_dir
    }

    fn processes(&self) -> Vec<(String, u32)> {
        Vec::new()
    }

    fn ensure_running(&mut self) -> Result<()> {
        Ok(())
    }
}
