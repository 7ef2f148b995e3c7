//! Commit signature checks for `require_signed`.
//!
//! SSH signatures (`gpg.format = ssh`) are verified with
//! `ssh-keygen -Y verify -n git -I <author email> -f <allowed_signers>`: the key
//! must be allowed *for the commit's author email*, so a signature does not lend
//! its trust to a forged author. OpenPGP signatures are verified with the
//! configured `gpg_program` (`--status-fd=1 --verify`), which must report a good
//! signature whose user id carries the author email.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::config::GitConfig;

/// The outcome of a check: `Ok(description)` or `Err(why it is refused)`.
pub(crate) type Verdict = Result<String, String>;

fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Result<(bool, String), String> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        // A verifier that exits early closes its stdin; that is its answer, not ours.
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Verify `signature` over `payload` for a commit authored by `author_email`.
pub(crate) fn verify(
    cfg: &GitConfig,
    signature: &str,
    payload: &[u8],
    author_email: &str,
) -> Verdict {
    if signature.contains("-----BEGIN SSH SIGNATURE-----") {
        let Some(signers) = &cfg.allowed_signers else {
            return Err("SSH-signed, but no `allowed_signers` file is configured".into());
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let sig_path = dir.path().join("commit.sig");
        std::fs::write(&sig_path, signature).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-Y")
            .arg("verify")
            .arg("-f")
            .arg(signers)
            .arg("-I")
            .arg(author_email)
            .arg("-n")
            .arg("git")
            .arg("-s")
            .arg(&sig_path);
        let (ok, text) = run_with_stdin(cmd, payload)?;
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        if ok {
            Ok(line)
        } else {
            Err(format!(
                "SSH signature not valid for {author_email} against the allowed signers: {line}"
            ))
        }
    } else if signature.contains("-----BEGIN PGP SIGNATURE-----") {
        let Some(gpg) = &cfg.gpg_program else {
            return Err("OpenPGP-signed, but no `gpg_program` is configured".into());
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let sig_path = dir.path().join("commit.asc");
        std::fs::write(&sig_path, signature).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(gpg);
        cmd.arg("--status-fd=1")
            .arg("--verify")
            .arg(&sig_path)
            .arg("-");
        let (ok, text) = run_with_stdin(cmd, payload)?;
        let good = text
            .lines()
            .find(|l| l.starts_with("[GNUPG:] GOODSIG "))
            .map(str::to_string);
        let valid = text.lines().any(|l| l.starts_with("[GNUPG:] VALIDSIG "));
        match good {
            Some(g) if ok && valid && g.contains(&format!("<{author_email}>")) => {
                Ok(g.trim_start_matches("[GNUPG:] ").to_string())
            }
            Some(g) if ok && valid => Err(format!(
                "OpenPGP signature is good but not by the author {author_email}: {}",
                g.trim_start_matches("[GNUPG:] GOODSIG ")
            )),
            _ => Err("OpenPGP signature not valid or key unknown".into()),
        }
    } else {
        Err("signature of an unknown format (neither SSH nor OpenPGP)".into())
    }
}
