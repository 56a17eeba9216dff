//! Asking a person for what a command is missing. Passwords are read without
//! echo from the terminal, or as one line from stdin with `--password-stdin`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context as _};

/// `given`, else a prompt on the terminal; without a terminal, a clear error naming the flag.
pub fn text(given: Option<String>, label: &str, flag: &str) -> anyhow::Result<String> {
    if let Some(v) = given {
        return Ok(v);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{label} is required: pass {flag}");
    }
    eprint!("{label}: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read from the terminal")?;
    Ok(line.trim().to_owned())
}

/// The password: one line from stdin with `--password-stdin`, else a prompt without echo.
pub fn password(from_stdin: bool, label: &str) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        if pw.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(pw);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{label} is required: pass --password-stdin and write it to stdin");
    }
    rpassword::prompt_password(format!("{label}: ")).context("cannot read the password from the terminal")
}

/// Asks `question` (y/N) unless `yes` (`--yes`); without a terminal, a clear error naming `--yes`.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} Pass --yes to confirm without a prompt");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read from the terminal")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
