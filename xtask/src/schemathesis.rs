//! `cargo xtask schemathesis [args]`: schemathesis against `berth serve`.
//!
//! Builds the server, then for two configurations on the mock backend
//! (no Docker needed) starts it on free loopback ports and runs
//! `schemathesis run <server>/api/v1/openapi.json` with
//! `xtask/schemathesis.toml` (every check, a few turned off per operation
//! with the reason): an open server (no token, no logins, any
//! image allowed), and one with a bearer token and the `header` login mode
//! (so hand-off links and `owner` are exercised, as the service). Extra
//! args go to both runs (`--max-examples 50`, `--seed 1`, ...).
//!
//! schemathesis comes from PyPI (`pip install schemathesis`, e.g. in a
//! virtualenv); `SCHEMATHESIS` names the program when it is not on `PATH`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The tool registry both servers use.
const TOOLS: &str = r#"version = 1

[[tools]]
name = "echo"
image = "berth/mock-tool"
port = 80
mem_reservation_mb = 16
description = "answers every request"

[[tools]]
name = "staged"
image = "berth/mock-tool"
mem_reservation_mb = 16
input_mode = "url"
description = "gets its input document by URL"
"#;

/// The bearer token of the second server.
const TOKEN: &str = "schemathesis-token";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let schemathesis = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let found = Command::new(&schemathesis).arg("--version").stdout(Stdio::null()).status();
    if !found.is_ok_and(|s| s.success()) {
        bail!("{schemathesis:?} did not run: pip install schemathesis (or set SCHEMATHESIS to the program)");
    }
    let root = berth_testkit::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(["build", "-q", "-p", "berth-server"]).status().context("building berth")?;
    if !status.success() {
        bail!("building berth failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let berth = target.join("debug/berth");
    let settings = root.join("xtask/schemathesis.toml");
    let mut failed = Vec::new();
    let with_token = format!(
        "[api]\ntoken = \"{TOKEN}\"\nallow_images = [\"*\"]\n\n[auth]\nmode = \"header\"\n\n\
         [auth.header]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    );
    for (name, extra, auth) in
        [("open", "[api]\nallow_images = [\"*\"]\n", None), ("token", with_token.as_str(), Some(TOKEN))]
    {
        println!("== schemathesis against berth serve ({name})");
        let dir = target.join("schemathesis").join(name);
        let server = Server::start(&berth, &dir, extra)?;
        let mut command = Command::new(&schemathesis);
        // Its cache (`.schemathesis/`) goes where it runs: not the work tree.
        command
            .current_dir(&dir)
            .arg("--config-file")
            .arg(&settings)
            .arg("run")
            .arg(format!("{}/api/v1/openapi.json", server.base))
            .args(["--request-timeout", "5", "--no-color"])
            .arg("--report-dir")
            .arg(dir.join("report"))
            .args(["--report", "junit"]);
        if let Some(token) = auth {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let status = command.args(args).status().context("running schemathesis")?;
        drop(server);
        if !status.success() {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("schemathesis found problems ({}); the reports are under target/schemathesis", failed.join(", "));
    }
    Ok(())
}

/// A `berth serve` on the mock backend, stopped on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(berth: &Path, dir: &Path, extra: &str) -> anyhow::Result<Server> {
        // A fresh state each run: containers of the mock backend do not
        // outlive the process, but the history database would.
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let (listen, staging) = (free_port()?, free_port()?);
        std::fs::write(dir.join("tools.toml"), TOOLS)?;
        let config = format!(
            "listen = \"127.0.0.1:{listen}\"\ndata_dir = \"state\"\ntools = \"tools.toml\"\n\n\
             [server]\nthreads = 1\n\n[engine]\nbackend = \"mock\"\n\n\
             [proxy]\nstart_timeout_secs = 3\n\n[fleet]\nmax_containers = 20\nmemory_budget_mb = 2048\n\n\
             [staging]\npublic_base = \"http://127.0.0.1:{staging}\"\nbind = \"127.0.0.1:{staging}\"\n\n{extra}"
        );
        std::fs::write(dir.join("berth.toml"), config)?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new(berth)
            .arg("serve")
            .arg("--config")
            .arg(dir.join("berth.toml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", berth.display()))?;
        let server = Server { child, base: format!("http://127.0.0.1:{listen}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            if Instant::now() > deadline {
                bail!("berth serve did not listen within 30 s; see {}", dir.join("server.log").display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
