//! The APIs coding agents speak, through herd, with their real clients: the
//! official `anthropic` SDK (Messages), the `openai` SDK's Responses, and
//! LiteLLM (library and proxy) — each against a node whose Ollama serves
//! the API itself (served natively) and one too old for it (translated to
//! `/api/chat` by herd). Then model names: untagged names, aliases, and
//! model management (copy, delete, create with blobs, push, unload) across
//! the fleet.

use herd_node::DeviceConfig;
use herd_node::config::ModelSpec;
use herd_tests::*;
use serde_json::json;

/// `new` runs an Ollama with `/v1/messages` (0.14) and `/v1/responses`
/// (0.13.3); `old` one with neither (0.12.6). Each has its own models, so
/// which node serves a request follows from its model.
fn versions_fleet() -> Vec<DeviceConfig> {
    let thinker = |name: &str| ModelSpec {
        thinking: true,
        ..model(name, 5.0)
    };
    let mut new = device(
        "new",
        64,
        vec![
            // It sees: the Anthropic check sends it an image.
            ModelSpec {
                vision: true,
                ..model("coder:7b", 4.0)
            },
            thinker("reasoner:8b"),
            embed_model("nomic-embed-text:latest"),
        ],
        &["coder:7b"],
    );
    new.ollama_version = "0.14.3".into();
    let mut old = device(
        "old",
        64,
        vec![
            ModelSpec {
                vision: true,
                ..model("legacy:7b", 4.0)
            },
            thinker("oldthink:8b"),
            embed_model("nomic-embed-text:latest"),
        ],
        &["legacy:7b"],
    );
    old.ollama_version = "0.12.6".into();
    vec![new, old]
}

fn aliased_config() -> herd_layer::app::config::RouterConfig {
    let mut cfg = router_config();
    cfg.routing.aliases = [
        ("claude-sonnet-4-5", "coder:7b"),
        ("gpt-4o-mini", "legacy:7b"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect::<std::collections::BTreeMap<_, _>>()
    .try_into()
    .unwrap();
    cfg.routing.alias_tiers.large = Some("reasoner:8b".into());
    cfg
}

fn paths(fleet: &Fleet, device: &str) -> std::collections::BTreeMap<String, u64> {
    fleet.device(device).stats().per_path
}

fn assert_checks(out: &str, checks: &[&str]) {
    for c in checks {
        assert!(
            out.contains(&format!("ok {c}\n")),
            "missing `ok {c}` in:\n{out}"
        );
    }
}

const ANTHROPIC_CHECKS: &[&str] = &[
    "anthropic create",
    "anthropic system blocks",
    "anthropic stream",
    "anthropic tool round trip",
    "anthropic tool stream",
    "anthropic image",
    "anthropic thinking",
    "anthropic count_tokens",
    "anthropic unknown model",
    "anthropic bad request",
    "anthropic count_tokens unknown model",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_native_translated_and_aliased() {
    let fleet = start(aliased_config(), versions_fleet()).await;
    let url = fleet.url();

    // Native: the new node's Ollama serves /v1/messages itself.
    let out = run_python("anthropic_check.py", &[&url, "coder:7b", "reasoner:8b"]).await;
    assert_checks(&out, ANTHROPIC_CHECKS);
    assert!(out.contains("served coder:7b by new"), "{out}");
    let new = paths(&fleet, "new");
    assert!(
        new.get("POST /v1/messages").copied().unwrap_or(0) >= 8,
        "{new:?}"
    );

    // Translated: the old node never sees /v1/messages, only /api/chat.
    let out = run_python("anthropic_check.py", &[&url, "legacy:7b", "oldthink:8b"]).await;
    assert_checks(&out, ANTHROPIC_CHECKS);
    assert!(out.contains("served legacy:7b by old"), "{out}");
    let old = paths(&fleet, "old");
    assert!(!old.contains_key("POST /v1/messages"), "{old:?}");
    assert!(
        old.get("POST /api/chat").copied().unwrap_or(0) >= 8,
        "{old:?}"
    );

    // Cloud names, as Claude Code sends them: an exact alias and the tier rule.
    let out = run_python(
        "anthropic_check.py",
        &[&url, "claude-sonnet-4-5", "claude-opus-4-1-20250805"],
    )
    .await;
    assert_checks(&out, ANTHROPIC_CHECKS);
    assert!(out.contains("served coder:7b by new"), "{out}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_responses_native_and_translated() {
    let fleet = start(aliased_config(), versions_fleet()).await;
    let url = fleet.url();
    let checks = [
        "responses create",
        "responses stream",
        "responses function tool",
        "responses function tool stream",
        "responses reasoning",
        "responses stateless",
        "responses unknown model",
    ];
    let out = run_python("responses_check.py", &[&url, "coder:7b", "reasoner:8b"]).await;
    assert_checks(&out, &checks);
    let new = paths(&fleet, "new");
    assert!(
        new.get("POST /v1/responses").copied().unwrap_or(0) >= 6,
        "{new:?}"
    );

    let out = run_python("responses_check.py", &[&url, "legacy:7b", "oldthink:8b"]).await;
    assert_checks(&out, &checks);
    let old = paths(&fleet, "old");
    assert!(!old.contains_key("POST /v1/responses"), "{old:?}");
    assert!(
        old.get("POST /api/chat").copied().unwrap_or(0) >= 6,
        "{old:?}"
    );

    // An alias through Responses (what Codex configured for gpt-4o-mini sends).
    let out = run_python("responses_check.py", &[&url, "gpt-4o-mini", "oldthink:8b"]).await;
    assert_checks(&out, &checks);
    assert!(out.contains("served legacy:7b by old"), "{out}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litellm_library_and_proxy_use_herd_as_upstream() {
    let fleet = start(router_config(), versions_fleet()).await;
    let url = fleet.url();
    let out = run_python(
        "litellm_check.py",
        &[&url, "legacy:7b", "nomic-embed-text:latest"],
    )
    .await;
    assert_checks(
        &out,
        &[
            "litellm sync ollama_chat chat+stream",
            "litellm sync ollama chat+stream",
            "litellm sync openai chat+stream",
            "litellm sync ollama_chat tools",
            "litellm sync openai tools",
            "litellm sync ollama embeddings",
            "litellm sync openai embeddings",
            "litellm async ollama_chat chat+stream",
            "litellm async ollama chat+stream",
            "litellm async openai chat+stream",
            "litellm async ollama_chat tools",
            "litellm async ollama embeddings",
            "litellm proxy started",
            "litellm proxy herd-chat chat+stream",
            "litellm proxy herd-gen chat+stream",
            "litellm proxy herd-openai chat+stream",
            "litellm proxy herd-chat tools",
            "litellm proxy herd-openai tools",
            "litellm proxy herd-embed embeddings",
            "litellm proxy herd-openai-embed embeddings",
        ],
    );
    assert!(out.contains("all litellm checks passed"), "{out}");
    fleet.shutdown().await;
}

/// `a` and `b` both hold `shared:7b` (loaded) and `tiny:latest`; `c` holds
/// `solo:3b` and `pushme:1b`.
fn management_fleet() -> Vec<DeviceConfig> {
    vec![
        device(
            "a",
            64,
            vec![model("shared:7b", 4.0), model("tiny:latest", 0.5)],
            &["shared:7b"],
        ),
        device(
            "b",
            64,
            vec![model("shared:7b", 4.0), model("tiny:latest", 0.5)],
            &["shared:7b"],
        ),
        // A small model to push: the device simulates the upload's time.
        device(
            "c",
            64,
            vec![model("solo:3b", 2.0), model("pushme:1b", 0.05)],
            &[],
        ),
    ]
}

async fn device_models(fleet: &Fleet, device: &str, path: &str) -> Vec<String> {
    let r = get(&client(), &format!("{}{path}", fleet.device(device).url())).await;
    r.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_names_and_aliases() {
    let fleet = start(aliased_config(), {
        let mut f = management_fleet();
        f[2].models.push(model("legacy:7b", 4.0));
        f
    })
    .await;
    let url = fleet.url();
    let c = client();
    // An untagged name is :latest, the default namespace and registry may
    // be written, and case does not matter — as Ollama resolves names.
    for asked in [
        "tiny",
        "library/tiny",
        "registry.ollama.ai/library/tiny:latest",
        "TINY:Latest",
    ] {
        let r = post(&c, &format!("{url}/api/chat"), chat(asked, "hi", false)).await;
        assert_eq!(r.status, 200, "{asked}: {}", r.text());
        assert_eq!(
            r.header("x-herd-model").as_deref(),
            Some("tiny:latest"),
            "{asked}"
        );
    }
    // An alias: the client's name in the body, the served one in x-herd-model.
    let r = post(
        &c,
        &format!("{url}/v1/chat/completions"),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "gpt-4o-mini");
    assert_eq!(r.header("x-herd-model").as_deref(), Some("legacy:7b"));
    assert_eq!(r.header("x-herd-node").as_deref(), Some("c"));
    // Aliases are listed for agents that list models; patterns are not.
    let ids: Vec<String> = get(&c, &format!("{url}/v1/models")).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini".to_string()), "{ids:?}");
    assert!(ids.contains(&"tiny:latest".to_string()), "{ids:?}");
    assert_eq!(
        get(&c, &format!("{url}/v1/models/claude-sonnet-4-5"))
            .await
            .status,
        200
    );
    // A name no alias or node knows stays unknown.
    let r = post(
        &c,
        &format!("{url}/v1/chat/completions"),
        json!({"model": "mistral-large", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_management_across_the_fleet() {
    let fleet = start(router_config(), management_fleet()).await;
    let url = fleet.url();
    let c = client();

    // /api/tags and /api/ps keep Ollama's full entries, plus the nodes.
    let tags = get(&c, &format!("{url}/api/tags")).await.json();
    let tiny = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tiny:latest")
        .cloned()
        .expect("tiny listed");
    assert_eq!(tiny["digest"].as_str().unwrap().len(), 64, "{tiny}");
    assert!(
        tiny["modified_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-10-01T12:00:00"),
        "{tiny}"
    );
    assert_eq!(tiny["details"]["format"], "gguf", "{tiny}");
    assert!(tiny["details"]["families"].is_array(), "{tiny}");
    assert_eq!(tiny["nodes"], json!(["a", "b"]));
    let ps = get(&c, &format!("{url}/api/ps")).await.json();
    let loaded: Vec<&serde_json::Value> = ps["models"].as_array().unwrap().iter().collect();
    assert_eq!(loaded.len(), 2, "{ps}");
    for m in &loaded {
        assert_eq!(m["name"], "shared:7b");
        assert!(m["expires_at"].as_str().unwrap().contains('T'), "{m}");
        assert_eq!(m["digest"].as_str().unwrap().len(), 64, "{m}");
        assert!(m["size_vram"].as_u64().unwrap() > 0, "{m}");
    }

    // Unload: keep_alive 0 with nothing asked unloads on every node.
    let r = post(
        &c,
        &format!("{url}/api/generate"),
        json!({"model": "shared:7b", "keep_alive": 0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["done_reason"], "unload");
    let mut nodes: Vec<String> = r
        .header("x-herd-node")
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["a", "b"]);
    for d in ["a", "b"] {
        assert!(
            device_models(&fleet, d, "/api/ps").await.is_empty(),
            "{d} still has it loaded"
        );
    }
    assert_eq!(
        get(&c, &format!("{url}/api/ps")).await.json()["models"],
        json!([])
    );

    // Copy goes to every node with the source.
    let r = send(
        &c,
        http::Request::post(format!("{url}/api/copy")),
        json!({"source": "shared:7b", "destination": "shared-backup"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for d in ["a", "b"] {
        assert!(
            device_models(&fleet, d, "/api/tags")
                .await
                .contains(&"shared-backup:latest".to_string()),
            "{d}"
        );
    }
    let r = send(
        &c,
        http::Request::post(format!("{url}/api/copy")),
        json!({"source": "nowhere:1b", "destination": "x"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("not found"));

    // Delete on the node named, then on every node that has it.
    let del = |body: serde_json::Value, node: Option<&str>| {
        let mut b = http::Request::delete(format!("{url}/api/delete"));
        if let Some(n) = node {
            b = b.header("x-herd-node", n);
        }
        send(&c, b, body.to_string().into_bytes())
    };
    let r = del(json!({"model": "shared-backup"}), Some("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !device_models(&fleet, "a", "/api/tags")
            .await
            .contains(&"shared-backup:latest".to_string())
    );
    assert!(
        device_models(&fleet, "b", "/api/tags")
            .await
            .contains(&"shared-backup:latest".to_string())
    );
    let r = del(json!({"model": "shared-backup"}), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("b"));
    assert!(
        !device_models(&fleet, "b", "/api/tags")
            .await
            .contains(&"shared-backup:latest".to_string())
    );
    let r = del(json!({"model": "shared-backup"}), None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = del(json!({"model": "bad name!"}), None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = del(json!({"model": "tiny"}), Some("nope")).await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Create from uploaded blobs: the upload and the create meet on one node.
    let blob: Vec<u8> = b"GGUF"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(7u8, 4096))
        .collect();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let blob_url = format!("{url}/api/blobs/{digest}");
    let head = |u: String| send(&c, http::Request::head(u), Vec::new());
    assert_eq!(head(blob_url.clone()).await.status, 404);
    assert_eq!(
        head(format!("{url}/api/blobs/sha256:nothex")).await.status,
        400
    );
    let r = send(&c, http::Request::post(&blob_url), blob).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let holder = r.header("x-herd-node").expect("blob node");
    let r = head(blob_url.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-herd-node").as_deref(), Some(holder.as_str()));
    let r = post(
        &c,
        &format!("{url}/api/create"),
        json!({"model": "custom", "files": {"model.gguf": digest}, "stream": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "success");
    assert_eq!(r.header("x-herd-node").as_deref(), Some(holder.as_str()));
    assert!(
        device_models(&fleet, &holder, "/api/tags")
            .await
            .contains(&"custom:latest".to_string())
    );
    let r = post(
        &c,
        &format!("{url}/api/create"),
        json!({"model": "orphan", "files": {"model.gguf": format!("sha256:{}", "cd".repeat(32))}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("upload it first"), "{}", r.text());

    // Create from a model goes where that model is; push from a node that has it.
    let r = post(
        &c,
        &format!("{url}/api/create"),
        json!({"model": "solo-terse", "from": "solo:3b", "system": "Be terse.", "stream": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("c"));
    let r = post(
        &c,
        &format!("{url}/api/push"),
        json!({"model": "pushme:1b", "stream": false}),
    )
    .await;
    assert_eq!(
        r.header("x-herd-node").as_deref(),
        Some("c"),
        "{}",
        r.text()
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // The fleet learns the new models, and routes to them.
    fleet
        .wait_for("solo-terse listed", |v| {
            v.node("c").is_some_and(|n| n.has_model("solo-terse"))
        })
        .await;
    let r = post(
        &c,
        &format!("{url}/api/chat"),
        chat("solo-terse", "hi", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("c"));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ollama_sdk_manages_models_through_herd() {
    let fleet = start(router_config(), management_fleet()).await;
    let out = run_python("manage_check.py", &[&fleet.url()]).await;
    assert_checks(
        &out,
        &[
            "ollama create_blob",
            "ollama create from files",
            "ollama copy",
            "ollama delete",
            "ollama ps and unload",
        ],
    );
    fleet.shutdown().await;
}
