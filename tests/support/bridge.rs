//! `oclagl bridge` started for a test, on an ephemeral port, with its log
//! kept in the test's folder.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::BIN;

pub struct Bridge {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Bridge {
    pub fn start(dir: &Path, gateway: &str, secret: &str, extra: &[&str]) -> Bridge {
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .args(["bridge", "--port", "0"])
            .args(extra)
            .env("INTERNAL_SECRET", secret)
            .env("GATEWAY_BASE_URL", gateway)
            // Every log line there is, kept in the folder the secret checks read.
            .env("OCLAGL_LOG", "debug")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bridge");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut log = std::fs::File::create(dir.join("bridge.log")).expect("bridge.log");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(rest) = line.split("oclagl bridge listening addr=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("bridge ready")
            .parse()
            .unwrap();
        Bridge { child, addr }
    }

    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("oclagl bridge exited ({status})");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        super::terminate(&mut self.child, "oclagl bridge")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
