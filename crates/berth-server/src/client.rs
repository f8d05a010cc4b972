//! The client subcommands: calls to a running server's `/api/v1`.

use std::io::Write;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Largest launch event the client buffers.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What `berth launch` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A tool of the server's registry.
    Tool(String),
    /// An image, where the server allows it.
    Image {
        /// The image reference.
        image: String,
        /// Its HTTP port inside the container.
        port: Option<u16>,
        /// Memory reservation in MiB.
        mem_reservation_mb: Option<u64>,
    },
}

/// A connection to a berth server's API.
pub struct Api {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Show progress as a live spinner (a terminal) instead of lines.
    interactive: bool,
}

/// How `berth launch` shows the phases of a launch: a spinner whose
/// message follows the phase on a terminal (indicatif, on stderr), one
/// line per phase otherwise (pipes, logs, tests).
struct Phases<'a, W: Write> {
    out: &'a mut W,
    spinner: Option<indicatif::ProgressBar>,
}

impl<'a, W: Write> Phases<'a, W> {
    fn new(out: &'a mut W, interactive: bool) -> Self {
        let spinner = interactive.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            bar
        });
        Phases { out, spinner }
    }

    /// A phase under way.
    fn phase(&mut self, text: String) -> std::io::Result<()> {
        match &self.spinner {
            Some(bar) => {
                bar.set_message(text);
                Ok(())
            }
            None => {
                writeln!(self.out, "{text}")?;
                self.out.flush()
            }
        }
    }

    /// The last line: the spinner goes, the line stays.
    fn finish(&mut self, text: String) -> std::io::Result<()> {
        if let Some(bar) = self.spinner.take() {
            bar.finish_and_clear();
        }
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }
}

impl<W: Write> Drop for Phases<'_, W> {
    fn drop(&mut self) {
        if let Some(bar) = self.spinner.take() {
            bar.finish_and_clear();
        }
    }
}

impl Api {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            interactive: false,
        }
    }

    /// Shows launch progress as a live spinner (for a terminal).
    pub fn interactive(mut self, interactive: bool) -> Self {
        self.interactive = interactive;
        self
    }

    /// Sends one request; returns the response with its body unread.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        self.client.request(req.body(body)?).await.with_context(|| format!("calling {}{path}", self.base))
    }

    /// One request; returns status and body text.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, String)> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let text = String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
        Ok((status, text))
    }

    /// A streaming `GET`: `each` gets the body's chunks as they arrive,
    /// until the body ends or `each` returns `false`.
    async fn stream(&self, path: &str, mut each: impl FnMut(&[u8]) -> anyhow::Result<bool>) -> anyhow::Result<()> {
        let resp = self.send("GET", path, None).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let text = String::from_utf8_lossy(&body.collect().await?.to_bytes()).into_owned();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            bail!("server answered {status}: {}", message.trim_end());
        }
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.context("reading the stream")?.into_data()
                && !each(&data)?
            {
                break;
            }
        }
        Ok(())
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, text) = self.call(method, path, body).await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !(200..300).contains(&status) {
            let message = value.get("error").and_then(Value::as_str).unwrap_or(&text);
            bail!("server answered {status}: {message}");
        }
        Ok(value)
    }

    /// `berth ls`.
    pub async fn ls(&self, out: &mut impl Write) -> anyhow::Result<()> {
        let v = self.json("GET", "/api/v1/containers", None).await?;
        writeln!(out, "{:<24} {:<16} {:<10} {:<6} URL", "NAME", "TOOL", "STATUS", "READY")?;
        for c in v["containers"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{:<24} {:<16} {:<10} {:<6} {}",
                c["name"].as_str().unwrap_or("?"),
                c["tool"].as_str().unwrap_or("-"),
                c["status"].as_str().unwrap_or("?"),
                c["ready"].as_bool().unwrap_or(false),
                c["url"].as_str().or(c["path"].as_str()).unwrap_or("")
            )?;
        }
        Ok(())
    }

    /// `berth volumes`: persistent volumes, their owners and users.
    pub async fn volumes(&self, out: &mut impl Write) -> anyhow::Result<()> {
        let v = self.json("GET", "/api/v1/volumes", None).await?;
        writeln!(out, "{:<40} {:<20} USED BY", "VOLUME", "OWNER")?;
        for vol in v["volumes"].as_array().into_iter().flatten() {
            let used: Vec<&str> = vol["used_by"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            writeln!(
                out,
                "{:<40} {:<20} {}",
                vol["name"].as_str().unwrap_or("?"),
                vol["owner"].as_str().unwrap_or("-"),
                if used.is_empty() { "-".to_owned() } else { used.join(",") }
            )?;
        }
        Ok(())
    }

    /// `berth volume-rm`: removes a persistent volume and its data.
    pub async fn volume_rm(&self, name: &str, out: &mut impl Write) -> anyhow::Result<()> {
        let (status, text) = self.call("DELETE", &format!("/api/v1/volumes/{name}"), None).await?;
        if status != 204 {
            bail!("server answered {status}: {}", error_text(&text));
        }
        writeln!(out, "removed volume {name}")?;
        Ok(())
    }

    /// `berth launch`: launches, then shows progress until ready or failed.
    pub async fn launch(
        &self,
        name: &str,
        what: &What,
        files: Vec<String>,
        parameters: Value,
        wait: bool,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        let mut body = json!({"name": name, "parameters": parameters});
        let label = match what {
            What::Tool(tool) => {
                body["tool"] = json!(tool);
                tool.clone()
            }
            What::Image { image, port, mem_reservation_mb } => {
                body["image"] = json!(image);
                if let Some(port) = port {
                    body["port"] = json!(port);
                }
                if let Some(mb) = mem_reservation_mb {
                    body["mem_reservation_mb"] = json!(mb);
                }
                image.clone()
            }
        };
        if !files.is_empty() {
            body["files"] = json!(files);
        }
        let launched = self.json("POST", "/api/v1/containers", Some(body)).await?;
        let evicted = launched["evicted"].as_array().map(|a| a.len()).unwrap_or(0);
        writeln!(
            out,
            "launched {name} ({label}){}",
            if evicted > 0 { format!(", evicted {evicted}") } else { String::new() }
        )?;
        if !wait {
            return Ok(());
        }
        let path = launched["url"].as_str().or(launched["path"].as_str()).unwrap_or("").to_owned();
        let mut phases = Phases::new(out, self.interactive);
        // Progress from the server's launch events, one phase at a time.
        // Raw bytes until a whole event is in: a UTF-8 character may be
        // split across chunks.
        let mut pending: Vec<u8> = Vec::new();
        let mut outcome: Option<anyhow::Result<()>> = None;
        self.stream(&format!("/api/v1/containers/{name}/events"), |chunk| {
            pending.extend_from_slice(chunk);
            if pending.len() > MAX_EVENT_BYTES {
                bail!("the server sent an event of more than {MAX_EVENT_BYTES} bytes");
            }
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = pending.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&raw);
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
                let data: Value = serde_json::from_str(data).unwrap_or_default();
                let age = data["age_secs"].as_f64().map(|a| format!(" ({a:.1} s)")).unwrap_or_default();
                match data["phase"].as_str().unwrap_or("") {
                    "ready" => {
                        phases.finish(format!("{name} is ready{age} at {path}"))?;
                        outcome = Some(Ok(()));
                    }
                    "failed" => {
                        let logs: Vec<&str> =
                            data["logs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        outcome = Some(Err(anyhow::anyhow!(
                            "{name} failed: {}\nlast log lines:\n{}",
                            data["reason"].as_str().unwrap_or("unknown reason"),
                            logs.join("\n")
                        )));
                    }
                    "timeout" => {
                        outcome = Some(Err(anyhow::anyhow!("{name} was not ready within the server's timeout")))
                    }
                    "creating" => phases.phase(format!("creating the container{age}"))?,
                    "starting" => phases.phase(format!("starting{age}"))?,
                    "waiting" => phases.phase(format!("waiting for {name} to answer{age}"))?,
                    other => phases.phase(format!("{other}{age}"))?,
                }
            }
            Ok(outcome.is_none())
        })
        .await?;
        outcome.unwrap_or_else(|| bail!("the server ended the launch events of {name} without an outcome"))
    }

    /// `berth logs`; with `follow`, streams new lines until the container
    /// stops or the command is interrupted.
    pub async fn logs(&self, name: &str, follow: bool, out: &mut impl Write) -> anyhow::Result<()> {
        let path = format!("/api/v1/containers/{name}/logs{}", if follow { "?follow=true" } else { "" });
        self.stream(&path, |chunk| {
            out.write_all(chunk)?;
            out.flush()?;
            Ok(true)
        })
        .await
    }

    /// `berth history`.
    pub async fn history(&self, name: &str, out: &mut impl Write) -> anyhow::Result<()> {
        let v = self.json("GET", &format!("/api/v1/containers/{name}/history"), None).await?;
        for e in v["history"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{:.3} {} {} {}",
                e["time"].as_f64().unwrap_or(0.0),
                e["status"],
                e["bytes"],
                e["path"].as_str().unwrap_or("")
            )?;
        }
        Ok(())
    }

    /// `berth rm`.
    pub async fn rm(&self, name: &str, out: &mut impl Write) -> anyhow::Result<()> {
        let (status, text) = self.call("DELETE", &format!("/api/v1/containers/{name}"), None).await?;
        if status != 204 {
            bail!("server answered {status}: {text}");
        }
        writeln!(out, "removed {name}")?;
        Ok(())
    }

    /// `berth purge`.
    pub async fn purge(&self, body: Value, out: &mut impl Write) -> anyhow::Result<()> {
        let v = self.json("POST", "/api/v1/purge", Some(body)).await?;
        for n in v["removed"].as_array().into_iter().flatten() {
            writeln!(out, "removed {}", n.as_str().unwrap_or("?"))?;
        }
        Ok(())
    }
}

/// The `error` of an API error body, else the body.
fn error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A server with the API and the proxy over mock tools; its base URL.
    async fn server(warmup: Duration) -> String {
        let api = crate::testutil::mock_api(warmup).await;
        let proxy = berth_proxy::Proxy::with_hooks(
            api.table.clone(),
            berth_proxy::ProxyConfig::default(),
            berth_proxy::AllowAll,
            berth_proxy::ActivityRecorder::disabled(),
        );
        let app = berth_axum::api::api_router(api).merge(berth_axum::proxy_router(proxy, "/docker"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn launch_shows_progress_and_logs_follow() {
        let base = server(Duration::from_millis(800)).await;
        let api = Api::new(&base, None);
        let mut out = Vec::new();
        api.launch("t1", &What::Tool("viewer".into()), vec![], json!({}), true, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("launched t1 (viewer)\n"), "{text}");
        assert!(text.contains("waiting for t1 to answer (") && text.contains("t1 is ready ("), "{text}");
        assert!(text.trim_end().ends_with("at http://127.0.0.1:8000/docker/t1/"), "{text}");

        // logs -f: a line written while following arrives; the command
        // returns when the container stops.
        let follower = {
            let api = Api::new(&base, None);
            tokio::spawn(async move {
                let mut out = Vec::new();
                api.logs("t1", true, &mut out).await.map(|()| String::from_utf8(out).unwrap())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(api.call("GET", "/docker/t1/say/while-following", None).await.unwrap().0, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = api.call("GET", "/docker/t1/exit/0", None).await;
        let followed = tokio::time::timeout(Duration::from_secs(10), follower).await.unwrap().unwrap().unwrap();
        assert!(followed.contains("while-following"), "{followed}");

        let mut out = Vec::new();
        let e = api.logs("nope", false, &mut out).await.unwrap_err().to_string();
        assert!(e.starts_with("server answered 404"), "{e}");
        let e = api.launch("t2", &What::Tool("nosuch".into()), vec![], json!({}), true, &mut out).await;
        let e = e.unwrap_err().to_string();
        assert!(e.contains("not in the registry"), "{e}");
        let image = What::Image { image: "berth/mock-tool:latest".into(), port: Some(80), mem_reservation_mb: Some(8) };
        let e = api.launch("t3", &image, vec![], json!({}), true, &mut out).await.unwrap_err().to_string();
        assert!(e.contains("403") && e.contains("registry tools only"), "{e}");
    }
}
