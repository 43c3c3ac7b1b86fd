//! `molt spec`: write runc's default config.json into the bundle directory.

use std::path::PathBuf;

use super::CmdResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundle directory to write config.json into
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
}

pub fn run(a: Args) -> CmdResult {
    let path = a.bundle.join("config.json");
    if path.exists() {
        return Err(format!("File {} exists. Remove it first", path.display()).into());
    }
    std::fs::write(&path, crate::spec::default_config()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(0)
}
