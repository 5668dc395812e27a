//! The fleet token, end to end with the real `herd-node` binary: the right
//! token attaches; a wrong or missing one is refused, and both sides say
//! why in words a person can act on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_tests::router_config;

fn herd_node() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("herd-node");
    assert!(
        p.exists(),
        "{} is missing: cargo build -p herd-node",
        p.display()
    );
    p
}

struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, router: &str, token: &[&str]) -> Node {
        let fleet = dir.join(format!("{name}.toml"));
        std::fs::write(&fleet, format!("[[devices]]\nname = \"{name}\"\n")).unwrap();
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(herd_node())
            .args(["simulate", "--fleet"])
            .arg(&fleet)
            .args(["--router", router])
            .args(token)
            .env_remove("HERD_NODE_FLEET_TOKEN")
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn herd-node");
        Node { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_fleet_token_right_attaches_wrong_and_missing_are_refused() {
    let mut cfg = router_config();
    cfg.routing.fleet_token = Some("s3cret-token".into());
    let dir = cfg.app.data_dir.clone().unwrap();
    let router = herd_layer::app::server::start(cfg).await.expect("router");
    let url = router.url();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let right = Node::start(
        &dir,
        "right",
        &url,
        &["--fleet-token-file", token_file.to_str().unwrap()],
    );
    let wrong = Node::start(&dir, "wrong", &url, &["--fleet-token", "guess"]);
    let missing = Node::start(&dir, "missing", &url, &[]);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = &router.attachments;
        let done = a.attached().iter().any(|n| &**n == "right")
            && a.refusal("wrong").is_some()
            && a.refusal("missing").is_some()
            && wrong.log().contains("rejected")
            && missing.log().contains("rejected");
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "attached {:?}, refusals wrong={:?} missing={:?}\nright:\n{}\nwrong:\n{}",
            a.attached(),
            a.refusal("wrong"),
            a.refusal("missing"),
            right.log(),
            wrong.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = &router.attachments;
    assert_eq!(
        a.attached()
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        ["right"]
    );
    assert_eq!(a.refusal("wrong").as_deref(), Some("wrong fleet token"));
    assert!(
        a.refusal("missing")
            .unwrap()
            .contains("requires a fleet token")
    );
    assert!(a.refusal("right").is_none());
    // The nodes say it too, with the router's reason.
    assert!(wrong.log().contains("wrong fleet token"), "{}", wrong.log());
    assert!(
        missing.log().contains("requires a fleet token"),
        "{}",
        missing.log()
    );
    assert!(right.log().contains("attached"), "{}", right.log());
    let view = router.fleet.snapshot();
    assert!(view.node("right").is_some_and(|n| n.online));
    assert!(view.node("wrong").is_none() && view.node("missing").is_none());
    drop((right, wrong, missing));
    router.shutdown().await;
}

#[test]
fn node_refuses_an_empty_token_file() {
    let dir = std::env::temp_dir().join(format!("herd-node-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = Command::new(herd_node())
        .args([
            "run",
            "--router",
            "http://127.0.0.1:1",
            "--no-learn",
            "--fleet-token-file",
        ])
        .arg(&empty)
        .output()
        .expect("run herd-node");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is empty"), "{err}");
}
