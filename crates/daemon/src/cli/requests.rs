//! The commands on ops and requests: `run`, `ops`, `approve`, `deny`,
//! `cancel`, `status` and `retry`.

use youops_core::State;

use super::backend::Backend;
use super::failure::{exit, CliResult};
use super::output::{exit_for, parse_args, parse_id, print_record};
use super::OpsCmd;

/// `youops run OP name=value...`: exit 0 only on success.
pub(crate) async fn run(
    b: &dyn Backend,
    op: &str,
    args: &[String],
    dry_run: bool,
    json: bool,
) -> CliResult {
    let args = parse_args(args)?;
    let rec = b.run(op, args, dry_run).await?;
    print_record(&rec, json);
    Ok(exit_for(&rec))
}

/// `youops ops list|show`.
pub(crate) async fn ops(b: &dyn Backend, cmd: &OpsCmd) -> CliResult {
    match cmd {
        OpsCmd::List => {
            let listing = b.ops().await?;
            if listing.ops.is_empty() {
                if let Some(note) = &listing.empty_note {
                    println!("{note}");
                }
            }
            for (name, description) in &listing.ops {
                println!("{name:<24} {description}");
            }
        }
        OpsCmd::Show { op } => println!("{}", b.op_help(op).await?),
    }
    Ok(exit::OK)
}

/// `youops approve ID`: 0 while more approvals are needed, else as the run ends.
pub(crate) async fn approve(b: &dyn Backend, id: &str, json: bool) -> CliResult {
    let rec = b.approve(parse_id(id)?).await?;
    print_record(&rec, json);
    Ok(if rec.state == State::PendingApproval {
        exit::OK
    } else {
        exit_for(&rec)
    })
}

/// `youops deny ID [REASON...]`.
pub(crate) async fn deny(b: &dyn Backend, id: &str, reason: &[String]) -> CliResult {
    let rid = parse_id(id)?;
    let reason = (!reason.is_empty()).then(|| reason.join(" "));
    print_record(&b.deny(rid, reason).await?, false);
    Ok(exit::OK)
}

/// `youops cancel ID`.
pub(crate) async fn cancel(b: &dyn Backend, id: &str) -> CliResult {
    print_record(&b.cancel(parse_id(id)?).await?, false);
    Ok(exit::OK)
}

/// `youops status ID`.
pub(crate) async fn status(b: &dyn Backend, id: &str, json: bool) -> CliResult {
    print_record(&b.status(parse_id(id)?).await?, json);
    Ok(exit::OK)
}

/// `youops retry ID`: as `run`.
pub(crate) async fn retry(b: &dyn Backend, id: &str, json: bool) -> CliResult {
    let rec = b.retry(parse_id(id)?).await?;
    print_record(&rec, json);
    Ok(exit_for(&rec))
}
