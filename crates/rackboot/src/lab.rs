//! `rackboot lab`: the virtual rack.

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum LabCmd {
    /// Not yet wired.
    Status,
}

pub async fn run(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Status => anyhow::bail!("lab is being wired"),
    }
}
