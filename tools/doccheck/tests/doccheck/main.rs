//! The runner on pages of its own: steps that pass, each kind of failure, a
//! background server probed and stopped by a signal, shell state and captures
//! carried from step to step.

use std::path::Path;
use std::process::{Command, Output};

fn doccheck(dir: &Path, page: &str) -> Output {
    std::fs::write(dir.join("page.md"), page).expect("write page");
    Command::new(env!("CARGO_BIN_EXE_youops-doccheck"))
        .arg("page.md")
        .current_dir(dir)
        .env("YOUOPS_SERVER", "http://example.invalid") // a reader's shell has none
        .output()
        .expect("run doccheck")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn state_captures_and_checks_carry_from_step_to_step() {
    let dir = tempfile::tempdir().unwrap();
    let page = r#"
# A page

<!-- doccheck
exit=0
exit=0 contains="id: 01ABC" capture.ID="id: ([0-9A-Z]+)"
exit=3 contains="got 01ABC in sub" not-contains="YOUOPS_SERVER"
-->
```sh
export GREETING=hello; mkdir sub && cd sub
echo "id: 01ABC"   # a trailing comment
sh -c 'echo "got <ID> in $(basename "$PWD") ${YOUOPS_SERVER:-}"; exit 3'
```

<!-- doccheck: skip="needs a real account" -->
```bash
false
```

<!-- doccheck
contains="hello"
-->
```console
echo "$GREETING"
```
"#;
    let o = doccheck(dir.path(), page);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("page.md: 4 passed, 0 failed, 1 skipped"), "{t}");
}

#[test]
fn each_failure_names_its_line_and_shows_the_output() {
    let table: &[(&str, &str)] = &[
        (
            "<!-- doccheck -->\n```sh\necho hi; exit 4\n```\n",
            "page.md:3: $ echo hi; exit 4 … FAILED: exit 4 where the docs expect 0",
        ),
        (
            "<!-- doccheck\ncontains=\"bye\"\n-->\n```sh\necho hi\n```\n",
            "does not contain `bye`",
        ),
        (
            "<!-- doccheck\nnot-contains=\"hi\"\n-->\n```sh\necho hi\n```\n",
            "contains `hi`, which the docs rule out",
        ),
        (
            "<!-- doccheck\ntimeout=1\n-->\n```sh\nsleep 30\n```\n",
            "ran longer than 1 s",
        ),
        (
            "<!-- doccheck -->\n```sh\necho <ID>\n```\n",
            "<ID> was captured by no earlier step",
        ),
        (
            "<!-- doccheck: signal=HUP -->\n",
            "no background process to signal",
        ),
    ];
    for (page, want) in table {
        let dir = tempfile::tempdir().unwrap();
        let o = doccheck(dir.path(), page);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{page}: {t}");
        assert!(t.contains(want), "{page}: want `{want}` in\n{t}");
    }
    // A page that cannot be checked runs nothing.
    let dir = tempfile::tempdir().unwrap();
    let o = doccheck(dir.path(), "```sh\ntouch ran\n```\n");
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(!dir.path().join("ran").exists());
}

#[test]
fn a_background_server_is_probed_then_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A tiny HTTP server: 200 on every GET, a line on SIGHUP, exit 0 on SIGINT.
    let server = r#"import http.server, signal, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
signal.signal(signal.SIGHUP, lambda *a: print("reloaded", flush=True))
signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;
    std::fs::write(dir.path().join("server.py"), server).unwrap();
    let page = format!(
        "<!-- doccheck\nbackground=http://127.0.0.1:{port}/healthz timeout=30\n-->\n```sh\npython3 server.py {port}\n```\n\n\
<!-- doccheck\ncontains=\"ok\"\n-->\n```sh\ncurl -s http://127.0.0.1:{port}/ || python3 -c 'import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())' http://127.0.0.1:{port}/\n```\n\n\
<!-- doccheck: signal=HUP log-contains=\"reloaded\" -->\n\n<!-- doccheck: signal=INT exit=0 -->\n"
    );
    let o = doccheck(dir.path(), &page);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("signal INT … ok, SIGINT sent, exit 0"), "{t}");
    // Once stopped, nothing answers.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
