//! The official `ollama` and `openai` Python SDKs, pointed at herd, against a
//! fleet of simulated devices: list, chat (streamed and not), generate,
//! embed, and a tool-call round trip all succeed with the content intact.

use herd_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_through_herd() {
    let python = python();
    let fleet = start(
        router_config(),
        vec![
            device(
                "studio",
                192,
                vec![
                    model("llama3.2:3b", 2.0),
                    embed_model("nomic-embed-text:latest"),
                ],
                &["llama3.2:3b"],
            ),
            device(
                "mini",
                32,
                vec![
                    model("llama3.2:3b", 2.0),
                    embed_model("nomic-embed-text:latest"),
                ],
                &["nomic-embed-text:latest"],
            ),
            device("air", 16, vec![model("qwen3:8b", 5.0)], &[]),
        ],
    )
    .await;
    let url = fleet.url();
    let script = tests_dir().join("py/sdk_check.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([&url, "llama3.2:3b", "nomic-embed-text:latest"])
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("all sdk checks passed"), "{stdout}");
    for check in [
        "ollama tool round trip",
        "openai chat stream",
        "openai tool round trip",
        "ollama embed",
    ] {
        assert!(
            stdout.contains(&format!("ok {check}")),
            "missing {check}: {stdout}"
        );
    }
    fleet.shutdown().await;
}
