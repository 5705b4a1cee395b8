//! Running tools, and installing the ones a plugin language needs: Debian packages with
//! `apt-get`, a command found on `PATH`. Every failure says which tool, why, and what to do.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, bail};

/// How many lines of a failed tool's output an error quotes.
const TAIL_LINES: usize = 40;

/// Run `command` with its output captured; fail with `what`, the status and the output's tail.
pub fn run_captured(command: &mut Command, what: &str) -> Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot run `{}`", program(command)))?;
    if !output.status.success() {
        bail!(
            "{what}: `{}` failed ({}):\n{}",
            display(command),
            output.status,
            tail(&output)
        );
    }
    Ok(output)
}

/// The last lines of a command's stderr and stdout.
pub fn tail(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        text.push_str(&stdout);
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}

fn program(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}

/// `program arg1 arg2`, for messages.
pub fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file `program` resolves to on `PATH`, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// The first line `program args` prints (a version), if it runs.
pub fn version_line(program: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let text = if text.trim().is_empty() {
        String::from_utf8_lossy(&output.stderr).into_owned()
    } else {
        text.into_owned()
    };
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// Of the Debian `packages`, those not installed. `None` when this is no Debian-like system.
pub fn missing_debian_packages(packages: &[&str]) -> Option<Vec<String>> {
    which("dpkg-query")?;
    let missing = packages
        .iter()
        .filter(|package| {
            let installed = Command::new("dpkg-query")
                .args(["-W", "-f=${db:Status-Abbrev}", package])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ii"));
            !installed
        })
        .map(|p| (*p).to_owned())
        .collect();
    Some(missing)
}

/// Make sure the Debian `packages` are installed (`apt-get update` then `apt-get install -y`, as
/// root), for `why` ("C plugins"). Does nothing when they all are.
pub fn ensure_debian_packages(packages: &[&str], why: &str) -> Result<()> {
    let list = packages.join(" ");
    let Some(missing) = missing_debian_packages(packages) else {
        bail!(
            "{why} need the Debian packages `{list}` (or their equivalents), and this system has \
             no dpkg/apt: install them with your package manager"
        );
    };
    if missing.is_empty() {
        return Ok(());
    }
    let missing_list = missing.join(" ");
    if which("apt-get").is_none() {
        bail!("{why} need the Debian packages `{missing_list}`, and `apt-get` is not on PATH");
    }
    if !is_root() {
        bail!(
            "{why} need the Debian packages `{missing_list}`, not installed; installing them \
             needs root: run `sudo apt-get update && sudo apt-get install -y {missing_list}`"
        );
    }
    println!("installing Debian packages for {why}: {missing_list} (apt-get)");
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run_captured(
        &mut apt(&["update"]),
        &format!("{why}: cannot update the Debian package lists"),
    )?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    run_captured(
        &mut install,
        &format!("{why}: cannot install the Debian packages `{missing_list}`"),
    )?;
    let still = missing_debian_packages(packages).unwrap_or_default();
    if !still.is_empty() {
        bail!(
            "{why}: apt-get succeeded but `{}` is still not installed",
            still.join(" ")
        );
    }
    Ok(())
}

/// Make sure `program` is on PATH, installing the Debian `packages` that provide it if not.
pub fn ensure_command(program: &str, packages: &[&str], why: &str) -> Result<PathBuf> {
    if let Some(path) = which(program) {
        return Ok(path);
    }
    ensure_debian_packages(packages, why)
        .with_context(|| format!("{why} need `{program}`, which is not on PATH"))?;
    which(program).with_context(|| {
        format!(
            "{why} need `{program}`: the packages `{}` are installed but it is not on PATH",
            packages.join(" ")
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_names_itself_and_shows_its_output() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let err = run_captured(&mut command, "testing")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("testing: `sh -c echo out; "), "{err}");
        assert!(err.contains("err\nout"), "{err}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = run_captured(&mut Command::new("no-such-tool-weft"), "testing").unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot run `no-such-tool-weft`"),
            "{err:#}"
        );
        assert!(which("no-such-tool-weft").is_none());
        assert!(which("sh").is_some());
    }
}
