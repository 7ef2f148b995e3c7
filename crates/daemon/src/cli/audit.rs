//! `youops audit ...`: list, verify (the store or JSON-lines files), archive and
//! export.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use youops_core::audit::{ArchivesVerdict, Broken, ChainVerifier, VerifyReport};

use super::backend::{Backend, ChainCheck};
use super::failure::{exit, CliResult, Failure};
use super::output::{event_line, parse_id};
use super::AuditCmd;

/// `youops audit` on a backend (`verify --file` is [`verify_files`]).
pub(crate) async fn audit(b: &dyn Backend, cmd: &AuditCmd) -> CliResult {
    match cmd {
        AuditCmd::List {
            request,
            json,
            limit,
        } => list(b, request.as_deref(), *json, *limit).await,
        AuditCmd::Verify { .. } => Ok(match b.verify().await? {
            ChainCheck::Live(report) => chain_verdict(&report, ""),
            ChainCheck::WithArchives(v, files) => archives_verdict(&v, files),
        }),
        AuditCmd::Archive { keep, through } => archive(b, *keep, *through).await,
        AuditCmd::Export => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            b.export(&mut out).await?;
            let _ = out.flush();
            Ok(exit::OK)
        }
    }
}

/// `audit list`: one request's events, or the latest `limit`.
async fn list(b: &dyn Backend, request: Option<&str>, json: bool, limit: usize) -> CliResult {
    let request = request.map(parse_id).transpose()?;
    let events = b.events(request, limit).await?;
    for e in &events {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            println!("{}", event_line(e));
        }
    }
    Ok(exit::OK)
}

/// `audit archive`: retention by hand.
async fn archive(b: &dyn Backend, keep: Option<u64>, through: Option<u64>) -> CliResult {
    let done = b.archive(keep, through).await?;
    match done.report {
        None => println!("nothing to archive through #{}", done.through),
        Some(r) => println!(
            "archived events #{}..#{} to {} ({} bytes); checkpoint #{}; {} request records removed",
            r.first_seq,
            r.through_seq,
            r.file.display(),
            r.bytes,
            r.checkpoint_seq,
            r.records_removed
        ),
    }
    Ok(exit::OK)
}

/// Verify JSON-lines files of events (exports, archives) as one chain, in order.
pub(crate) fn verify_files(paths: &[PathBuf]) -> CliResult {
    let mut v = ChainVerifier::new();
    for path in paths {
        if let Err(b) = verify_file_into(&mut v, path)? {
            println!("audit chain BROKEN at {b} (in {})", path.display());
            return Ok(exit::FAILED);
        }
    }
    Ok(chain_verdict(
        &v.finish(),
        &format!(" in {} file(s)", paths.len()),
    ))
}

/// Print the outcome of a chain walk (`scope` says what was walked); the exit code.
fn chain_verdict(r: &VerifyReport, scope: &str) -> u8 {
    match &r.broken {
        None => {
            println!(
                "audit chain intact: {} events{scope}, head #{} {}",
                r.checked, r.head_seq, r.head_hash
            );
            exit::OK
        }
        Some(b) => {
            println!(
                "audit chain BROKEN at {b} ({} records before it are intact)",
                r.checked
            );
            exit::FAILED
        }
    }
}

/// Feed one JSON-lines file to `v`; `Ok(Err(..))` names the first broken record.
fn verify_file_into(v: &mut ChainVerifier, path: &Path) -> Result<Result<(), Broken>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            exit::REFUSED,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(v.check_json_lines(&text))
}

/// Print the walk over `files` archives, in order, then the live chain, as one
/// chain; the exit code.
fn archives_verdict(v: &ArchivesVerdict, files: usize) -> u8 {
    if let (Some(b), Some(path)) = (&v.report.broken, &v.broken_in) {
        println!("audit chain BROKEN at {b} (in {})", path.display());
        return exit::FAILED;
    }
    if let Some(b) = &v.report.broken {
        println!("audit chain BROKEN at {b} (where the store continues the archives)");
        return exit::FAILED;
    }
    if v.overlap > 0 {
        println!(
            "note: the store still holds the last {} archived events (an archive was cut \
             short; the next retention pass finishes it)",
            v.overlap
        );
    }
    chain_verdict(
        &v.report,
        &format!(" ({} archived in {} file(s))", v.archived, files),
    )
}
