//! A real OTLP receiver for the telemetry tests: `tests/py/otlp_receiver.py`
//! (opentelemetry-proto + grpcio) printing every span and metric point it
//! gets as a JSON line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{python, tests_dir};

/// The running receiver; killed when dropped.
pub struct Receiver {
    child: std::process::Child,
    /// Each span or metric point received, as JSON.
    pub lines: std::sync::mpsc::Receiver<Value>,
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the receiver and wait until it listens.
pub fn receiver() -> Receiver {
    let mut child = Command::new(python())
        .arg(tests_dir().join("py/otlp_receiver.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the OTLP receiver");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Some(p) = line.strip_prefix("PORT ") {
                let _ = port_tx.send(p.trim().parse::<u16>().unwrap());
            } else if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("receiver listening");
    Receiver {
        child,
        lines: rx,
        port,
    }
}
