//! `molt completion SHELL` and `molt man DIR`: shell completions and man pages made from the
//! same clap definitions the commands are parsed with, so they cannot drift from them
//! (scripts/install puts them in place).

use std::path::PathBuf;

use clap::CommandFactory;

use super::{Cli, CmdResult};

#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write molt.1 and one molt-COMMAND.1 per command into
    pub dir: PathBuf,
}

pub fn completion(a: CompletionArgs) -> CmdResult {
    clap_complete::generate(a.shell, &mut Cli::command(), "molt", &mut std::io::stdout());
    Ok(0)
}

pub fn man(a: ManArgs) -> CmdResult {
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &a.dir).map_err(|e| format!("writing man pages into {}: {e}", a.dir.display()))?;
    Ok(0)
}
