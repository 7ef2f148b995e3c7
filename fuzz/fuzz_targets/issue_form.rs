#![no_main]
//! Issue-form bodies as GitHub renders them: never panics.
use libfuzzer_sys::fuzz_target;
use youops_core::catalog::OpSpec;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static OP: OpSpec = toml::from_str(
            r#"
name = "deploy"
runner = { type = "builtin", name = "noop" }
[[params]]
name = "service"
type = "enum"
values = ["api", "web"]
[[params]]
name = "version"
type = "string"
[[params]]
name = "force"
type = "bool"
required = false
[[params]]
name = "replicas"
type = "int"
default = 2
"#,
        )
        .expect("static op");
    }
    let text = String::from_utf8_lossy(data);
    OP.with(|op| {
        let _ = youops_frontend_issue::parse_issue_form(&text, op);
    });
});
