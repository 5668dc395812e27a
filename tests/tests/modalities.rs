//! Every modality a Mac fleet serves, end to end over real sockets: speech
//! to text, image generation and vision routed by what each node's model
//! can do; engines beside Ollama (speech-to-text and image servers a
//! herd-node reports, OpenAI-only LLM servers attached or polled
//! agentless) served to Ollama and OpenAI clients alike. The official
//! `openai` and `ollama` SDKs drive it (tests/py/modalities_check.py, with
//! a WAV spoken by espeak-ng); the plumbing herd adds — uploads streamed
//! through and replayed only while they can be, a slot per image job held
//! to its end, the reasons `/fleet/explain` gives — is checked here.

use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_node::config::{ModelSpec, SimEngine};
use herd_node::{Device, DeviceConfig};
use herd_tests::*;
use http_body_util::{BodyExt, StreamBody};

fn spec(name: &str, gib: f64, f: impl FnOnce(&mut ModelSpec)) -> ModelSpec {
    let mut m = model(name, gib);
    f(&mut m);
    m
}

/// An engine beside a device's Ollama.
fn engine(kind: SimEngine, models: Vec<ModelSpec>, slots: u32) -> DeviceConfig {
    DeviceConfig {
        engine: kind,
        models,
        num_parallel: slots,
        transcribe_ms_per_audio_s: 50.0,
        image_ms: 400,
        image_partials: 2,
        ..device("engine", 16, vec![], &[])
    }
}

fn fleet_devices() -> Vec<DeviceConfig> {
    let gemma = |vision: bool| spec("gemma3:4b", 3.3, |m| m.vision = vision);
    let audio = || spec("gemma3n:e4b", 7.5, |m| m.audio = true);
    let whisper = || model("whisper-1", 1.5);
    let mut studio = device(
        "studio",
        64,
        vec![model("llama3.2:3b", 2.0), gemma(true), audio()],
        &["llama3.2:3b"],
    );
    studio.ollama_version = "0.20.1".into();
    studio.extra_engines = vec![
        engine(SimEngine::Stt, vec![whisper()], 2),
        engine(SimEngine::Image, vec![model("sdxl-turbo", 6.9)], 1),
    ];
    let mini = device(
        "mini",
        32,
        vec![model("llama3.2:3b", 2.0), gemma(false), audio()],
        &["gemma3:4b"],
    );
    // A second speech-to-text engine, on a machine that is hot and short
    // of memory (which its engines share).
    let mut air = device("air", 16, vec![model("llama3.2:3b", 2.0)], &[]);
    air.ollama_version = "0.20.1".into();
    air.extra_engines = vec![engine(SimEngine::Stt, vec![whisper()], 2)];
    let mut vllm = device(
        "vllm",
        128,
        vec![
            spec("qwen3-coder:30b", 18.0, |m| m.tools = true),
            embed_model("bge-m3"),
        ],
        &[],
    );
    vllm.engine = SimEngine::OpenAi;
    vec![studio, mini, air, vllm]
}

/// `n` bytes of a 16 kHz mono 16-bit WAV.
fn wav(n: usize) -> Vec<u8> {
    let data = (n - 44) as u32;
    let mut b = Vec::with_capacity(n);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&[1, 0, 1, 0]);
    b.extend_from_slice(&16_000u32.to_le_bytes());
    b.extend_from_slice(&32_000u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 16, 0]);
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    b.extend((0..data).map(|i| (i % 251) as u8));
    b
}

const BOUNDARY: &str = "herdTestBoundary7MA4YWxkTrZu0gW";

/// A transcription form: the fields, then the file, or the file first.
fn form(model: &str, file: &[u8], model_first: bool) -> Vec<u8> {
    let field = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n"
    );
    let mut file_part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    file_part.extend_from_slice(file);
    file_part.extend_from_slice(b"\r\n");
    let mut out = Vec::new();
    if model_first {
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(&file_part);
    } else {
        out.extend_from_slice(&file_part);
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// FNV-1a, 64 bits: the hash the simulated engines put in a transcript.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

type Chunks = futures::channel::mpsc::Receiver<Result<hyper::body::Frame<Bytes>, std::io::Error>>;

/// Upload `body` in 64 KiB chunks without a length (chunked), pausing
/// between chunks; returns the answer.
async fn upload(url: &str, body: Vec<u8>, pause: Duration) -> Reply {
    use futures::SinkExt;
    let (mut tx, rx): (_, Chunks) = futures::channel::mpsc::channel(4);
    tokio::spawn(async move {
        for c in body.chunks(64 * 1024) {
            if tx
                .send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<Chunks>>();
    let req = http::Request::post(format!("{url}/v1/audio/transcriptions"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(StreamBody::new(rx))
        .unwrap();
    let rsp = client.request(req).await.expect("upload");
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// A router (its config changed by `tune`), an OpenAI-only engine it polls
/// itself, and the attached devices; returns when every node, engines
/// included, is routable.
async fn start_modal(
    tune: impl FnOnce(&mut herd_layer::app::config::RouterConfig),
) -> (Fleet, herd_node::DeviceHandle, String) {
    let mut lmstudio = device("lmstudio", 32, vec![model("phi4:14b", 9.1)], &[]);
    lmstudio.engine = SimEngine::OpenAi;
    let agentless = Device::start(lmstudio, None)
        .await
        .expect("agentless engine");
    let mut cfg = router_config();
    cfg.routing.nodes = vec![format!("openai+{}", agentless.url())];
    cfg.routing.poll_interval = Duration::from_millis(100);
    tune(&mut cfg);
    let router = herd_layer::app::server::start(cfg).await.expect("router");
    let devices = herd_node::start_fleet(
        herd_node::FleetConfig {
            devices: fleet_devices(),
            ..Default::default()
        },
        Some(router.url()),
    )
    .await
    .expect("devices");
    let fleet = Fleet { router, devices };
    let agentless_id = agentless.addr().to_string();
    let want = [
        "studio",
        "studio/stt",
        "studio/image",
        "mini",
        "air",
        "air/stt",
        "vllm",
        agentless_id.as_str(),
    ];
    fleet
        .wait_for("every node and engine routable", |v| {
            want.iter().all(|id| v.node(id).is_some_and(|n| n.online))
        })
        .await;
    (fleet, agentless, agentless_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_reach_every_modality_on_the_node_that_can_serve_it() {
    let python = python();
    let (fleet, agentless, agentless_id) = start_modal(|_| {}).await;
    // air runs hot and short of memory: its engines share that.
    fleet.device("air").set_sensors(SensorsPatch {
        thermal: Some(Thermal::Serious),
        memory_pressure: Some(Pressure::Warn),
        ..Default::default()
    });
    fleet
        .wait_for("air's engine hot too", |v| {
            v.node("air/stt")
                .is_some_and(|n| n.thermal == herd_layer::fleet::Thermal::Serious)
        })
        .await;
    let view = fleet.router.fleet.snapshot();
    let stt = view.node("studio/stt").unwrap();
    assert_eq!(stt.engine, herd_layer::fleet::Engine::Stt);
    assert_eq!(stt.machine.as_deref(), Some("studio"));
    assert_eq!(stt.memory_total_bytes, 64 << 30, "the machine's memory");
    assert_eq!(
        view.node(&agentless_id).unwrap().engine,
        herd_layer::fleet::Engine::OpenAi
    );

    let out = tokio::process::Command::new(&python)
        .arg(tests_dir().join("py/modalities_check.py"))
        .args([fleet.url().as_str(), agentless_id.as_str()])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "modality checks failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for check in [
        "openai transcription to the speech-to-text engine",
        "openai transcription to an audio-capable model on Ollama 0.20",
        "transcriptions no node can serve are refused",
        "openai images.generate streams progress",
        "image generations no node can serve are refused",
        "openai vision chat goes to the node whose model sees",
        "vision chats no node can serve are refused",
        "ollama chat with images goes to the node whose model sees",
        "ollama SDK on the OpenAI-only engine vllm",
        &format!("openai SDK on the OpenAI-only engine {agentless_id}"),
        "ollama embed on the OpenAI-only engine",
        "anthropic and responses SDKs on the OpenAI-only engine",
        "ollama tool call on the OpenAI-only engine",
        "all modality checks passed",
    ] {
        assert!(stdout.contains(check), "missing {check:?}:\n{stdout}");
    }
    // The devices agree on who served what: no image reached a blind
    // model, no upload the old Ollama.
    let mini = fleet.device("mini").stats();
    assert_eq!(
        mini.per_path.get("POST /v1/audio/transcriptions"),
        None,
        "{mini:?}"
    );
    assert!(
        fleet.device("studio").stats().per_model["gemma3:4b"].served >= 12,
        "every vision chat on studio"
    );

    let c = client();
    let explain = get(
        &c,
        &format!("{}/fleet/explain?model=gemma3:4b&needs=vision", fleet.url()),
    )
    .await
    .json();
    assert_eq!(explain["winner"], "studio", "{explain}");
    let mini_why = explain["ranking"]["eliminated"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"] == "mini")
        .unwrap_or_else(|| panic!("mini not eliminated: {explain}"))
        .clone();
    assert_eq!(mini_why["reason"], "incapable", "{mini_why}");
    assert_eq!(
        mini_why["lacks"],
        serde_json::json!(["vision"]),
        "{mini_why}"
    );
    let explain = get(
        &c,
        &format!(
            "{}/fleet/explain?model=whisper-1&kind=transcribe",
            fleet.url()
        ),
    )
    .await
    .json();
    assert_eq!(
        explain["winner"], "studio/stt",
        "a hot machine's engine loses: {explain}"
    );
    assert_eq!(explain["needs"], serde_json::json!(["audio"]));

    fleet.shutdown().await;
    agentless.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_through_and_are_replayed_only_while_they_can_be() {
    let (fleet, agentless, _) = start_modal(|c| c.routing.max_body_bytes = 8 << 20).await;
    let url = fleet.url();
    fleet.device("air").set_sensors(SensorsPatch {
        thermal: Some(Thermal::Serious),
        memory_pressure: Some(Pressure::Warn),
        ..Default::default()
    });
    fleet
        .wait_for("air's engine hot too", |v| {
            v.node("air/stt")
                .is_some_and(|n| n.thermal == herd_layer::fleet::Thermal::Serious)
        })
        .await;

    // studio's speech-to-text engine fails every request now.
    let studio_stt = fleet.device("studio").extra_engines()[0].clone();
    studio_stt.set_faults(FaultsPatch {
        error_500: Some(true),
        ..Default::default()
    });
    let air_stt = fleet.device("air").extra_engines()[0].clone();
    air_stt.reset_stats();
    // Too large to hold: it went to the failing engine, and cannot go again.
    let r = upload(&url, form("whisper-1", &wav(3 << 20), true), Duration::ZERO).await;
    assert_eq!(r.status, 502, "{} {:?}", r.text(), r.headers);
    assert!(r.text().contains("simulated failure"), "{}", r.text());
    assert_eq!(air_stt.stats().served_total, 0, "not replayed");
    // Small enough to be held whole: replayed on the other engine.
    let small = wav(200_000);
    let r = post_raw(
        &client(),
        &format!("{url}/v1/audio/transcriptions"),
        Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
        form("whisper-1", &small, true),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("air/stt"));
    assert_eq!(
        r.header("x-herd-attempts").as_deref(),
        Some("2"),
        "{:?}",
        r.headers
    );
    assert!(
        r.text().contains(&format!("fnv1a {:016x}", fnv1a(&small))),
        "replayed whole"
    );
    studio_stt.set_faults(FaultsPatch {
        clear: true,
        ..Default::default()
    });

    // 6 MiB, sent slowly in chunks with no length: streamed through whole,
    // while herd holds no more than what it read before routing.
    let big = wav(6 << 20);
    let sending = upload(
        &url,
        form("whisper-1", &big, true),
        Duration::from_millis(3),
    );
    let mut sending = std::pin::pin!(sending);
    let mut held = Vec::new();
    let r = loop {
        tokio::select! {
            r = &mut sending => break r,
            _ = tokio::time::sleep(Duration::from_millis(25)) => {
                let m = get(&client(), &format!("{url}/metrics")).await.text();
                let v = m
                    .lines()
                    .find_map(|l| l.strip_prefix("herd_body_memory_bytes "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .expect("herd_body_memory_bytes in /metrics");
                held.push(v);
            }
        }
    };
    assert!(held.len() >= 5, "sampled while it streamed: {held:?}");
    let most = held.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "body memory while a 6 MiB upload streamed: at most {most} bytes over {} samples",
        held.len()
    );
    assert!(
        most > 0.0 && most <= 2.0 * 1024.0 * 1024.0,
        "herd held {most} bytes of a 6 MiB upload: {held:?}"
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("studio/stt"));
    let proof = format!("{} bytes, fnv1a {:016x}", big.len(), fnv1a(&big));
    assert!(r.text().contains(&proof), "{} vs {proof}", r.text());
    // The model after the file: the file is read first (bounded), then sent.
    let r = post_raw(
        &client(),
        &format!("{url}/v1/audio/transcriptions"),
        Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
        form("whisper-1", &small, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&format!("fnv1a {:016x}", fnv1a(&small))));
    // Beyond max_body_bytes, with no length to refuse it by: cut, 413.
    let r = upload(
        &url,
        form("whisper-1", &wav(10 << 20), true),
        Duration::ZERO,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("request_too_large"), "{}", r.text());
    // Not a form at all.
    let r = post(
        &client(),
        &format!("{url}/v1/audio/transcriptions"),
        serde_json::json!({"model": "whisper-1"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("multipart/form-data"), "{}", r.text());

    fleet.shutdown().await;
    agentless.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_jobs_queue_for_their_engines_slot_held_to_the_end() {
    let (fleet, agentless, _) = start_modal(|_| {}).await;
    let url = fleet.url();
    let image = fleet.device("studio").extra_engines()[1].clone();
    image.reset_stats();
    let started = Instant::now();
    let jobs = (0..3).map(|i| {
        let url = url.clone();
        async move {
            let body = serde_json::json!({"model": "sdxl-turbo", "prompt": format!("job {i}"), "stream": i == 0});
            post(&client(), &format!("{url}/v1/images/generations"), body).await
        }
    });
    let replies = futures::future::join_all(jobs).await;
    let took = started.elapsed();
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-herd-node").as_deref(), Some("studio/image"));
    }
    assert!(
        replies[0].text().contains("image_generation.completed"),
        "the streamed job's events pass through: {}",
        replies[0].text()
    );
    assert_eq!(
        replies[0].header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let s = image.stats();
    assert_eq!((s.served_total, s.max_active_seen), (3, 1), "{s:?}");
    // herd held each job's slot to its end: it never sent the engine a
    // job while another was running there (the engine would have queued it).
    assert_eq!(s.waited_for_slot, 0, "{s:?}");
    assert!(
        took >= Duration::from_millis(3 * 400),
        "one slot: the jobs ran one after another ({took:?})"
    );
    fleet.shutdown().await;
    agentless.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agentless_ollama_before_0_30_is_asked_what_its_models_can_do() {
    let mut old = device(
        "old",
        32,
        vec![
            spec("llava:7b", 4.7, |m| m.vision = true),
            model("llama3.2:3b", 2.0),
        ],
        &[],
    );
    old.ollama_version = "0.12.6".into();
    let old = Device::start(old, None).await.expect("agentless ollama");
    let mut cfg = router_config();
    cfg.routing.nodes = vec![old.url()];
    cfg.routing.poll_interval = Duration::from_millis(100);
    let fleet = start(cfg, vec![]).await;
    let id = old.addr().to_string();
    fleet
        .wait_for("capabilities from /api/show", |v| {
            v.node(&id).is_some_and(|n| {
                n.disk_model("llava:7b")
                    .is_some_and(|m| m.capabilities.contains(&"vision".to_string()))
            })
        })
        .await;
    let url = fleet.url();
    let image = serde_json::json!({"model": "llama3.2:3b", "messages": [{"role": "user", "content": "?", "images": ["iVBORw0KGgo="]}], "stream": false});
    let r = post(&client(), &format!("{url}/api/chat"), image).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("cannot read images"), "{}", r.text());
    let shows = old.stats().per_path.get("POST /api/show").copied();
    assert_eq!(shows, Some(2), "asked once per model");
    fleet.shutdown().await;
    old.shutdown().await;
}
