//! Bad input gets a clear error in the caller's own format.

use herd_tests::*;

async fn both(c: &Client, base: &str, ct: Option<&str>, body: Vec<u8>) -> (Reply, Reply) {
    let o = post_raw(c, &format!("{base}/api/chat"), ct, body.clone()).await;
    let a = post_raw(c, &format!("{base}/v1/chat/completions"), ct, body).await;
    (o, a)
}

fn ollama_shape(r: &Reply, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not Ollama's error shape: {v}"))
        .to_string()
}

fn openai_shape(r: &Reply, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    let e = &v["error"];
    assert!(e["type"].is_string(), "no type: {v}");
    assert!(e.get("code").is_some(), "no code: {v}");
    e["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not OpenAI's error shape: {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_statuses_in_both_formats() {
    let mut cfg = router_config();
    cfg.routing.max_body_bytes = 4096;
    let fleet = start(
        cfg,
        vec![device("a", 64, vec![model("m:8b", 5.0)], &["m:8b"])],
    )
    .await;
    let c = client();
    let base = fleet.url();

    // Malformed JSON: 400.
    let (o, a) = both(
        &c,
        &base,
        Some("application/json"),
        b"{\"model\": \"m:8b\", ".to_vec(),
    )
    .await;
    assert!(ollama_shape(&o, 400).contains("invalid JSON"));
    assert!(openai_shape(&a, 400).contains("invalid JSON"));
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");

    // Unknown model: 404, naming where the models are.
    let body = serde_json::to_vec(&chat("nope:1b", "hi", false)).unwrap();
    let (o, a) = both(&c, &base, Some("application/json"), body).await;
    let m = ollama_shape(&o, 404);
    assert!(m.contains("nope:1b") && m.contains("m:8b (a)"), "{m}");
    assert!(openai_shape(&a, 404).contains("m:8b (a)"));
    assert_eq!(a.json()["error"]["code"], "model_not_found");

    // Body over the limit: 413.
    let big = serde_json::to_vec(&chat("m:8b", &"x".repeat(10_000), false)).unwrap();
    let (o, a) = both(&c, &base, Some("application/json"), big).await;
    assert!(ollama_shape(&o, 413).contains("4096"));
    assert!(openai_shape(&a, 413).contains("4096"));

    // Any content type is read as JSON, as Ollama does (LiteLLM's async
    // client sends application/octet-stream); a multipart form that is not
    // JSON is a 400 that says so.
    let body = serde_json::to_vec(&chat("m:8b", "hi", false)).unwrap();
    for ct in [
        "application/octet-stream",
        "multipart/form-data; boundary=x",
    ] {
        let r = post_raw(&c, &format!("{base}/api/chat"), Some(ct), body.clone()).await;
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
    }
    let (o, a) = both(
        &c,
        &base,
        Some("multipart/form-data; boundary=x"),
        b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--x--".to_vec(),
    )
    .await;
    assert!(ollama_shape(&o, 400).contains("multipart"));
    openai_shape(&a, 400);

    // Missing model: 400; not an object: 400.
    let (o, a) = both(
        &c,
        &base,
        Some("application/json"),
        b"{\"messages\":[]}".to_vec(),
    )
    .await;
    assert!(ollama_shape(&o, 400).contains("model"));
    openai_shape(&a, 400);
    let (o, a) = both(&c, &base, None, b"[1,2]".to_vec()).await;
    ollama_shape(&o, 400);
    openai_shape(&a, 400);

    // Curl's default form content type is tolerated (Ollama's docs use `curl -d`).
    let r = post_raw(
        &c,
        &format!("{base}/api/chat"),
        Some("application/x-www-form-urlencoded"),
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Unknown routes answer in the format of their prefix.
    let r = get(&c, &format!("{base}/v1/nope")).await;
    openai_shape(&r, 404);
    let r = get(&c, &format!("{base}/api/nope")).await;
    ollama_shape(&r, 404);
    fleet.shutdown().await;
}
