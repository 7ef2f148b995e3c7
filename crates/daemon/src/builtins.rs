//! The builtin runners every executor of this crate has (the daemon's and the
//! CLI's on the local store), and the adapter for builtins an embedder adds.

use std::sync::Arc;
use std::time::Duration;

use youops_core::runner::{Builtin, BuiltinCall};
use youops_core::ExecutorBuilder;

/// The names of the builtins every daemon has ([`standard_builtins`]).
pub const STANDARD_BUILTINS: [&str; 3] = ["echo", "noop", "sleep"];

/// Register the builtins every daemon has: `noop`, `echo` and `sleep`.
pub fn standard_builtins(b: ExecutorBuilder) -> ExecutorBuilder {
    b.builtin("noop", |_c: BuiltinCall| async { Ok(String::new()) })
        .builtin("echo", |c: BuiltinCall| async move {
            let mut out = String::new();
            for (k, v) in &c.args {
                out.push_str(&format!("{k}={}\n", v.as_text()));
            }
            Ok(out)
        })
        .builtin("sleep", |c: BuiltinCall| async move {
            let secs = c
                .args
                .get("seconds")
                .and_then(|v| v.as_text().parse::<u64>().ok())
                .unwrap_or(1);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => Ok(format!("slept {secs}s")),
                _ = c.cancel.cancelled() => Err("cancelled".into()),
            }
        })
}

/// A shared builtin (from `RunOptions::builtins`) registered as an executor's own.
pub(crate) struct ArcBuiltin(pub(crate) Arc<dyn Builtin>);

#[async_trait::async_trait]
impl Builtin for ArcBuiltin {
    async fn call(&self, call: BuiltinCall) -> Result<String, String> {
        self.0.call(call).await
    }
}
