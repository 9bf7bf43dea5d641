//! Shell completions and man pages of the command-line tools (`clusterd completions SHELL`,
//! `clusterd man DIR`, and the same for `hwctl`), generated from their clap definitions so
//! they never drift from `--help`.

use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> String {
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes one man page (section 1) per command and subcommand of `cmd` into `dir` (created
/// when missing): `NAME.1`, `NAME-SUB.1`, `NAME-SUB-SUB.1`, ... Returns the files written, in
/// name order.
///
/// # Errors
/// A message naming the directory, the cause and the fix.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let fail = |e: std::io::Error| {
        format!(
            "man pages into {}: {e}; fix: name a directory you may write to (it is created \
             when missing)",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    fn generate(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            generate(sub, dir, out)?;
        }
        out.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
        Ok(())
    }
    // built, so that subcommands carry their full names (clusterd-lab-up)
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    generate(cmd, dir, &mut written).map_err(fail)?;
    written.sort();
    Ok(written)
}
