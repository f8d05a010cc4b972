//! The client subcommands: calls to a running server's `/api/v1`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A connection to a berth server's API.
pub struct Api {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// One request; returns status and body text.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, String)> {
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
        let resp =
            self.client.request(req.body(body)?).await.with_context(|| format!("calling {}{path}", self.base))?;
        let status = resp.status().as_u16();
        let text = String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
        Ok((status, text))
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
        writeln!(out, "{:<24} {:<16} {:<10} {:<6} PATH", "NAME", "TOOL", "STATUS", "READY")?;
        for c in v["containers"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{:<24} {:<16} {:<10} {:<6} {}",
                c["name"].as_str().unwrap_or("?"),
                c["tool"].as_str().unwrap_or("-"),
                c["status"].as_str().unwrap_or("?"),
                c["ready"].as_bool().unwrap_or(false),
                c["path"].as_str().unwrap_or("")
            )?;
        }
        Ok(())
    }

    /// `berth launch`: launches, then shows progress until ready or failed.
    pub async fn launch(
        &self,
        name: &str,
        tool: &str,
        files: Vec<String>,
        parameters: Value,
        wait: bool,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        let mut body = json!({"name": name, "tool": tool, "parameters": parameters});
        if !files.is_empty() {
            body["files"] = json!(files);
        }
        let launched = self.json("POST", "/api/v1/containers", Some(body)).await?;
        let evicted = launched["evicted"].as_array().map(|a| a.len()).unwrap_or(0);
        writeln!(
            out,
            "launched {name} ({tool}){}",
            if evicted > 0 { format!(", evicted {evicted}") } else { String::new() }
        )?;
        if !wait {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let c = self.json("GET", &format!("/api/v1/containers/{name}"), None).await?;
            if c["ready"].as_bool() == Some(true) {
                writeln!(
                    out,
                    "\r{name} is ready after {:.1} s at {}",
                    started.elapsed().as_secs_f64(),
                    c["path"].as_str().unwrap_or("")
                )?;
                return Ok(());
            }
            if matches!(c["status"].as_str(), Some("exited" | "dead")) {
                bail!("{name} exited with status {}", c["exit_code"]);
            }
            write!(out, "\rwaiting for {name} to answer... {:.0} s", started.elapsed().as_secs_f64())?;
            out.flush()?;
            if started.elapsed() > Duration::from_secs(600) {
                bail!("{name} was not ready within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `berth logs`; with `follow`, polls for new lines until interrupted.
    pub async fn logs(&self, name: &str, follow: bool, out: &mut impl Write) -> anyhow::Result<()> {
        let mut printed = 0usize;
        loop {
            let (status, text) = self.call("GET", &format!("/api/v1/containers/{name}/logs"), None).await?;
            if status != 200 {
                bail!("server answered {status}: {text}");
            }
            let lines: Vec<&str> = text.lines().collect();
            for line in lines.iter().skip(printed) {
                writeln!(out, "{line}")?;
            }
            printed = printed.max(lines.len());
            if !follow {
                return Ok(());
            }
            out.flush()?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
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
