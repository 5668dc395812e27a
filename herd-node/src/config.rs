//! Configuration of simulated devices and fleets.
//!
//! A fleet is one TOML file so that a test, a demo and a benchmark can all
//! describe "three Macs of different sizes" the same way. Every field has a
//! default, so `[[devices]]` with only a `name` is a valid, working device; and
//! every struct denies unknown fields, so a typo fails loudly instead of
//! silently falling back to a default.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// One gibibyte, the unit Ollama users think in.
pub const GIB: u64 = 1024 * 1024 * 1024;

/// Why a fleet configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid TOML for a [`FleetConfig`].
    #[error("invalid fleet TOML: {0}")]
    Parse(#[from] toml::de::Error),
    /// The TOML parsed but describes something impossible.
    #[error("invalid fleet config: {0}")]
    Invalid(String),
}

/// A whole simulated fleet, read from one TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Router every device attaches to (`http://127.0.0.1:port`), unless one
    /// is given on the command line or to [`crate::simulate::start_fleet`].
    pub router: Option<String>,
    /// Fleet token presented in `Hello` by every device.
    pub fleet_token: Option<String>,
    /// The devices.
    pub devices: Vec<DeviceConfig>,
}

/// Everything that makes one simulated device behave like a particular Mac.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Device name; also its herd node id.
    pub name: String,
    /// Address to bind; 127.0.0.1 unless you mean to expose it.
    pub bind: IpAddr,
    /// Port to bind; 0 picks an ephemeral port.
    pub port: u16,
    /// What `/api/version` answers; it also decides what the device's API
    /// has, as that Ollama release had it (`/v1/responses` from 0.13.3,
    /// `/v1/messages` from 0.14.0, `capabilities` in `/api/tags` from
    /// 0.30.0, thinking by default from 0.12.4).
    pub ollama_version: String,
    /// Chip name reported in hardware.
    pub chip: String,
    /// CPU cores reported in hardware.
    pub cpu_cores: u32,
    /// Unified memory of the machine.
    pub memory_total_bytes: u64,
    /// Share of memory that models may use (macOS lets the GPU wire about
    /// three quarters of unified memory by default).
    pub model_memory_fraction: f64,
    /// Disk size reported in hardware.
    pub disk_total_bytes: u64,
    /// Models on disk at start.
    pub models: Vec<ModelSpec>,
    /// Names of models (on disk) loaded at start.
    pub loaded: Vec<String>,
    /// Models `/api/pull` can fetch.
    pub catalog: Vec<ModelSpec>,
    /// Generation speed in tokens per second (a model may override it).
    pub speed: f64,
    /// Concurrent requests per loaded model, like `OLLAMA_NUM_PARALLEL`.
    /// Ollama picks 4 or 1 depending on memory; 4 is our default.
    pub num_parallel: u32,
    /// Requests allowed to wait for a slot before answering 503, like
    /// `OLLAMA_MAX_QUEUE` (Ollama's default is 512).
    pub max_queue: u32,
    /// Models loaded at once, like `OLLAMA_MAX_LOADED_MODELS`.
    pub max_loaded_models: u32,
    /// Fixed part of a cold load.
    pub load_base_ms: u64,
    /// Cold load time per GiB of model.
    pub load_ms_per_gb: u64,
    /// Fixed part of the time to first token.
    pub ttft_base_ms: u64,
    /// Time to first token per prompt token (prompt evaluation).
    pub ttft_ms_per_prompt_token: f64,
    /// Download speed of `/api/pull`.
    pub pull_bytes_per_sec: u64,
    /// Default keep-alive of a loaded model, in seconds; negative = forever.
    pub keep_alive_secs: i64,
    /// Sensor values at start.
    pub sensors: Sensors,
    /// Faults active at start.
    pub faults: Faults,
    /// What the device's engine is: an Ollama (the default), or a server
    /// that speaks only OpenAI's API — `openai` (an LLM server such as
    /// llama.cpp's or vLLM), `stt` (speech to text), `image` (image
    /// generation).
    pub engine: SimEngine,
    /// Engines beside the Ollama on the same machine, each on a port of its
    /// own and reported in the device's `extra_engines`; each is a device
    /// config whose `engine` is not `ollama` (its name, hardware and agent
    /// fields are unused).
    pub extra_engines: Vec<DeviceConfig>,
    /// Speech to text: milliseconds of work per second of audio, after the
    /// load and the time to first token (100: ten times real time).
    pub transcribe_ms_per_audio_s: f64,
    /// Image generation: milliseconds per 1024×1024 image (scaled by the
    /// pixels asked for), after the load.
    pub image_ms: u64,
    /// Image generation: partial images a streamed generation sends before
    /// the last one.
    pub image_partials: u32,
}

/// The kind of engine a simulated device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SimEngine {
    /// Ollama: its own API and its OpenAI compatibility.
    #[default]
    Ollama,
    /// An LLM server that speaks only OpenAI's API (`/v1/models`,
    /// `/v1/chat/completions`, `/v1/embeddings`).
    #[serde(rename = "openai")]
    OpenAi,
    /// A speech-to-text server (`/v1/audio/transcriptions`, `translations`).
    Stt,
    /// An image server (`/v1/images/generations`, `edits`).
    Image,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            name: "sim".to_owned(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            ollama_version: "0.12.6".to_owned(),
            chip: "Apple M2".to_owned(),
            cpu_cores: 8,
            memory_total_bytes: 32 * GIB,
            model_memory_fraction: 0.75,
            disk_total_bytes: 1024 * GIB,
            models: vec![ModelSpec::llama3_2_3b()],
            loaded: Vec::new(),
            catalog: Vec::new(),
            speed: 40.0,
            num_parallel: 4,
            max_queue: 512,
            max_loaded_models: 3,
            load_base_ms: 200,
            load_ms_per_gb: 500,
            ttft_base_ms: 40,
            ttft_ms_per_prompt_token: 0.5,
            pull_bytes_per_sec: 100 * 1024 * 1024,
            keep_alive_secs: 300,
            sensors: Sensors::default(),
            faults: Faults::default(),
            engine: SimEngine::Ollama,
            extra_engines: Vec::new(),
            transcribe_ms_per_audio_s: 100.0,
            image_ms: 4000,
            image_partials: 2,
        }
    }
}

/// A model as it sits on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// Full name with tag, e.g. `qwen3:8b` (`:latest` is added when missing).
    pub name: String,
    /// Size on disk, which is also its size in memory when loaded.
    pub size_bytes: u64,
    /// Family (`llama`, `qwen3`, `nomic-bert`); also the architecture.
    pub family: String,
    /// e.g. `8.2B`.
    pub parameter_size: String,
    /// e.g. `Q4_K_M`.
    pub quantization: String,
    /// Context window.
    pub context_length: u32,
    /// Set for embedding models: the vector dimension.
    pub embedding_dims: Option<u32>,
    /// Tokens per second for this model, overriding the device's speed.
    pub speed: Option<f64>,
    /// Tool calling (Ollama reads it from the template); ignored for
    /// embedding models.
    pub tools: bool,
    /// Image input (a vision tower or projector).
    pub vision: bool,
    /// A reasoning model: it streams `thinking` before its answer, and since
    /// Ollama 0.12.4 does so unless the request says `think: false`.
    pub thinking: bool,
    /// Audio input (an audio tower or projector).
    pub audio: bool,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            name: "model:latest".to_owned(),
            size_bytes: GIB,
            family: "llama".to_owned(),
            parameter_size: "1B".to_owned(),
            quantization: "Q4_K_M".to_owned(),
            context_length: 4096,
            embedding_dims: None,
            speed: None,
            tools: true,
            vision: false,
            thinking: false,
            audio: false,
        }
    }
}

impl ModelSpec {
    /// `llama3.2:3b`, 2.0 GB.
    pub fn llama3_2_3b() -> Self {
        Self {
            name: "llama3.2:3b".to_owned(),
            size_bytes: 2_019_393_189,
            family: "llama".to_owned(),
            parameter_size: "3.2B".to_owned(),
            quantization: "Q4_K_M".to_owned(),
            context_length: 131_072,
            ..Self::default()
        }
    }

    /// `qwen3:8b`, 5.2 GB.
    pub fn qwen3_8b() -> Self {
        Self {
            name: "qwen3:8b".to_owned(),
            size_bytes: 5_225_388_164,
            family: "qwen3".to_owned(),
            parameter_size: "8.2B".to_owned(),
            quantization: "Q4_K_M".to_owned(),
            context_length: 40_960,
            ..Self::default()
        }
    }

    /// `qwen3:32b`, 20 GB.
    pub fn qwen3_32b() -> Self {
        Self {
            name: "qwen3:32b".to_owned(),
            size_bytes: 20_201_253_588,
            family: "qwen3".to_owned(),
            parameter_size: "32.8B".to_owned(),
            quantization: "Q4_K_M".to_owned(),
            context_length: 40_960,
            ..Self::default()
        }
    }

    /// `nomic-embed-text:latest`, an embedding model of 768 dimensions.
    pub fn nomic_embed_text() -> Self {
        Self {
            name: "nomic-embed-text:latest".to_owned(),
            size_bytes: 274_302_450,
            family: "nomic-bert".to_owned(),
            parameter_size: "137M".to_owned(),
            quantization: "F16".to_owned(),
            context_length: 2048,
            embedding_dims: Some(768),
            ..Self::default()
        }
    }

    /// Whether this is an embedding model.
    pub fn is_embedding(&self) -> bool {
        self.embedding_dims.is_some()
    }

    /// Ollama's capability list for this model (`/api/show`, `/api/tags`
    /// since 0.30.0, and the herd.v1 report): `embedding` alone for an
    /// embedding model, else `completion` and what the flags add.
    pub fn capabilities(&self) -> Vec<String> {
        if self.is_embedding() {
            return vec!["embedding".to_owned()];
        }
        let flags = [
            (self.tools, "tools"),
            (self.vision, "vision"),
            (self.thinking, "thinking"),
            (self.audio, "audio"),
        ];
        std::iter::once("completion")
            .chain(flags.into_iter().filter(|(on, _)| *on).map(|(_, c)| c))
            .map(str::to_owned)
            .collect()
    }
}

/// An Ollama version as `(major, minor, patch)`; a pre-release suffix
/// (`0.14.0-rc1`) counts as its release. `None` when it does not parse (a
/// development build): callers treat that as the newest.
pub(crate) fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next().unwrap_or(v);
    let mut it = core.split('.').map(str::parse::<u64>);
    let major = it.next()?.ok()?;
    let minor = it.next().unwrap_or(Ok(0)).ok()?;
    let patch = it.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// Ollama's name rule: a name without a tag means `:latest`.
pub(crate) fn normalize_model_name(name: &str) -> String {
    let name = name.trim();
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// macOS-style memory pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pressure {
    /// Plenty of memory.
    #[default]
    Normal,
    /// The system is compressing memory.
    Warn,
    /// The system is swapping.
    Critical,
}

/// macOS thermal states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Thermal {
    /// Cool.
    #[default]
    Nominal,
    /// Warm.
    Fair,
    /// Throttling.
    Serious,
    /// Heavily throttling.
    Critical,
}

/// What the device's sensors read; tests change these while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Sensors {
    /// Memory pressure.
    pub memory_pressure: Pressure,
    /// Thermal state.
    pub thermal: Thermal,
    /// CPU utilization 0.0 ..= 1.0.
    pub cpu_utilization: f64,
    /// Reported available memory; when absent it is total minus loaded models.
    pub memory_available_bytes: Option<u64>,
}

/// A partial update of [`Sensors`]: absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SensorsPatch {
    /// New memory pressure.
    pub memory_pressure: Option<Pressure>,
    /// New thermal state.
    pub thermal: Option<Thermal>,
    /// New CPU utilization.
    pub cpu_utilization: Option<f64>,
    /// New available-memory override; `0` removes the override.
    pub memory_available_bytes: Option<u64>,
}

impl Sensors {
    /// Applies a patch.
    pub fn apply(&mut self, p: &SensorsPatch) {
        if let Some(v) = p.memory_pressure {
            self.memory_pressure = v;
        }
        if let Some(v) = p.thermal {
            self.thermal = v;
        }
        if let Some(v) = p.cpu_utilization {
            self.cpu_utilization = v.clamp(0.0, 1.0);
        }
        if let Some(v) = p.memory_available_bytes {
            self.memory_available_bytes = (v != 0).then_some(v);
        }
    }
}

/// Faults the device injects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// New TCP connections are accepted and dropped at once.
    pub refuse: bool,
    /// Inference requests answer 500.
    pub error_500: bool,
    /// Probability of the 500 when `error_500` is on (1.0 = always).
    pub error_500_probability: f64,
    /// Streams are cut (no final chunk) after this many chunks; 0 = off.
    pub die_mid_stream_after: u32,
    /// Requests (except `/_sim/*`) are read and never answered.
    pub hang: bool,
    /// Multiplies the token interval, TTFT and load times; 1.0 = normal.
    pub slowdown: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            refuse: false,
            error_500: false,
            error_500_probability: 1.0,
            die_mid_stream_after: 0,
            hang: false,
            slowdown: 1.0,
        }
    }
}

/// A partial update of [`Faults`]: absent fields stay as they are;
/// `clear: true` resets everything first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsPatch {
    /// Reset all faults before applying the other fields.
    pub clear: bool,
    /// See [`Faults::refuse`].
    pub refuse: Option<bool>,
    /// See [`Faults::error_500`].
    pub error_500: Option<bool>,
    /// See [`Faults::error_500_probability`].
    pub error_500_probability: Option<f64>,
    /// See [`Faults::die_mid_stream_after`].
    pub die_mid_stream_after: Option<u32>,
    /// See [`Faults::hang`].
    pub hang: Option<bool>,
    /// See [`Faults::slowdown`].
    pub slowdown: Option<f64>,
}

impl Faults {
    /// Applies a patch.
    pub fn apply(&mut self, p: &FaultsPatch) {
        if p.clear {
            *self = Self::default();
        }
        if let Some(v) = p.refuse {
            self.refuse = v;
        }
        if let Some(v) = p.error_500 {
            self.error_500 = v;
        }
        if let Some(v) = p.error_500_probability {
            self.error_500_probability = v.clamp(0.0, 1.0);
        }
        if let Some(v) = p.die_mid_stream_after {
            self.die_mid_stream_after = v;
        }
        if let Some(v) = p.hang {
            self.hang = v;
        }
        if let Some(v) = p.slowdown {
            self.slowdown = if v.is_finite() && v > 0.0 { v } else { 1.0 };
        }
    }
}

impl DeviceConfig {
    /// Whether the simulated Ollama is at least `want`; an unparseable
    /// version counts as the newest.
    pub fn ollama_at_least(&self, want: (u64, u64, u64)) -> bool {
        parse_version(&self.ollama_version).is_none_or(|v| v >= want)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("device {:?}: {m}", self.name)));
        if self.name.is_empty() {
            return bad("empty name".into());
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return bad(format!("speed must be > 0, got {}", self.speed));
        }
        if !(self.model_memory_fraction > 0.0 && self.model_memory_fraction <= 1.0) {
            return bad("model_memory_fraction must be in (0, 1]".into());
        }
        if self.num_parallel == 0 {
            return bad("num_parallel must be >= 1".into());
        }
        if !(self.transcribe_ms_per_audio_s.is_finite() && self.transcribe_ms_per_audio_s >= 0.0) {
            return bad("transcribe_ms_per_audio_s must be >= 0".into());
        }
        if self.extra_engines.len() > herd_proto::engine::MAX_EXTRA_ENGINES {
            return bad(format!(
                "at most {} extra engines",
                herd_proto::engine::MAX_EXTRA_ENGINES
            ));
        }
        for e in &self.extra_engines {
            if e.engine == SimEngine::Ollama {
                return bad("an extra engine is openai, stt or image, not ollama".into());
            }
            if !e.extra_engines.is_empty() {
                return bad("an extra engine has no extra engines of its own".into());
            }
            e.validate()?;
        }
        for m in self.models.iter().chain(&self.catalog) {
            if m.speed.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
                return bad(format!("model {:?}: speed must be > 0", m.name));
            }
            if m.embedding_dims == Some(0) {
                return bad(format!("model {:?}: embedding_dims must be > 0", m.name));
            }
        }
        for l in &self.loaded {
            let l = normalize_model_name(l);
            if !self
                .models
                .iter()
                .any(|m| normalize_model_name(&m.name) == l)
            {
                return bad(format!("loaded model {l:?} is not on disk"));
            }
        }
        Ok(())
    }
}

impl FleetConfig {
    /// Parses and validates a fleet TOML file.
    pub fn from_toml(s: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(s)?;
        let mut seen = std::collections::HashSet::new();
        for d in &cfg.devices {
            d.validate()?;
            if !seen.insert(d.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "duplicate device name {:?}",
                    d.name
                )));
            }
        }
        Ok(cfg)
    }

    /// Renders the fleet as TOML that [`FleetConfig::from_toml`] reads back.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Three Macs of different sizes with realistic models.
    pub fn demo() -> Self {
        let all = vec![
            ModelSpec::llama3_2_3b(),
            ModelSpec::qwen3_8b(),
            ModelSpec::qwen3_32b(),
            ModelSpec::nomic_embed_text(),
        ];
        let studio = DeviceConfig {
            name: "studio".to_owned(),
            chip: "Apple M2 Ultra".to_owned(),
            cpu_cores: 24,
            memory_total_bytes: 192 * GIB,
            models: all.clone(),
            loaded: vec!["qwen3:32b".to_owned(), "nomic-embed-text:latest".to_owned()],
            catalog: all.clone(),
            speed: 70.0,
            max_loaded_models: 4,
            ..DeviceConfig::default()
        };
        let mini = DeviceConfig {
            name: "mini".to_owned(),
            chip: "Apple M4 Pro".to_owned(),
            cpu_cores: 12,
            memory_total_bytes: 32 * GIB,
            models: vec![
                ModelSpec::llama3_2_3b(),
                ModelSpec::qwen3_8b(),
                ModelSpec::nomic_embed_text(),
            ],
            loaded: vec!["qwen3:8b".to_owned()],
            catalog: all.clone(),
            speed: 45.0,
            ..DeviceConfig::default()
        };
        let air = DeviceConfig {
            name: "air".to_owned(),
            chip: "Apple M2".to_owned(),
            cpu_cores: 8,
            memory_total_bytes: 16 * GIB,
            models: vec![ModelSpec::llama3_2_3b(), ModelSpec::nomic_embed_text()],
            loaded: vec!["llama3.2:3b".to_owned()],
            catalog: all,
            speed: 25.0,
            num_parallel: 1,
            max_loaded_models: 2,
            load_ms_per_gb: 800,
            ..DeviceConfig::default()
        };
        Self {
            router: None,
            fleet_token: None,
            devices: vec![studio, mini, air],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_round_trips_through_toml() {
        let demo = FleetConfig::demo();
        let text = demo.to_toml().expect("serialize");
        let back = FleetConfig::from_toml(&text).expect("parse back");
        assert_eq!(back, demo);
        assert_eq!(back.devices.len(), 3);
    }

    #[test]
    fn minimal_device_gets_defaults() {
        let cfg = FleetConfig::from_toml("[[devices]]\nname = \"a\"\n").expect("parse");
        assert_eq!(cfg.devices[0].num_parallel, 4);
        assert_eq!(cfg.devices[0].max_queue, 512);
        assert_eq!(cfg.devices[0].speed, 40.0);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(matches!(
            FleetConfig::from_toml("[[devices]]\nname = \"a\"\nsped = 3\n"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            FleetConfig::from_toml("[[devices]]\nname = \"a\"\nspeed = 0\n"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            FleetConfig::from_toml("[[devices]]\nname = \"a\"\nloaded = [\"nope\"]\n"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            FleetConfig::from_toml("[[devices]]\nname = \"a\"\n[[devices]]\nname = \"a\"\n"),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn names_get_latest_tag() {
        assert_eq!(normalize_model_name("llama3.2"), "llama3.2:latest");
        assert_eq!(normalize_model_name("qwen3:8b"), "qwen3:8b");
        assert_eq!(
            normalize_model_name("host:5000/ns/m"),
            "host:5000/ns/m:latest"
        );
    }

    #[test]
    fn capabilities_follow_the_flags() {
        let mut m = ModelSpec::default();
        assert_eq!(m.capabilities(), ["completion", "tools"]);
        m.tools = false;
        m.vision = true;
        m.thinking = true;
        m.audio = true;
        assert_eq!(
            m.capabilities(),
            ["completion", "vision", "thinking", "audio"]
        );
        assert_eq!(ModelSpec::nomic_embed_text().capabilities(), ["embedding"]);
        let cfg = FleetConfig::from_toml(
            "[[devices]]\nname = \"a\"\n[[devices.models]]\nname = \"r:1\"\nthinking = true\n",
        )
        .expect("parse");
        let r = &cfg.devices[0].models[0];
        assert!(r.thinking && r.tools && !r.vision);
    }

    #[test]
    fn engines_beside_ollama_are_other_kinds() {
        let cfg = FleetConfig::from_toml(
            "[[devices]]\nname = \"a\"\n[[devices.extra_engines]]\nengine = \"stt\"\n[[devices.extra_engines.models]]\nname = \"whisper-1\"\n",
        )
        .expect("parse");
        let e = &cfg.devices[0].extra_engines[0];
        assert_eq!(e.engine, SimEngine::Stt);
        assert_eq!(e.models[0].name, "whisper-1");
        for bad in [
            "[[devices]]\nname = \"a\"\n[[devices.extra_engines]]\nengine = \"ollama\"\n",
            "[[devices]]\nname = \"a\"\n[[devices.extra_engines]]\nengine = \"image\"\n[[devices.extra_engines.extra_engines]]\nengine = \"stt\"\n",
            "[[devices]]\nname = \"a\"\nengine = \"tts\"\n",
        ] {
            assert!(FleetConfig::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("0.12.6"), Some((0, 12, 6)));
        assert_eq!(parse_version("v0.33.0-rc2"), Some((0, 33, 0)));
        assert_eq!(parse_version("0.9"), Some((0, 9, 0)));
        assert_eq!(parse_version("dev"), None);
        let at = |v: &str| DeviceConfig {
            ollama_version: v.into(),
            ..DeviceConfig::default()
        };
        assert!(at("0.14.0").ollama_at_least((0, 14, 0)));
        assert!(!at("0.13.5").ollama_at_least((0, 14, 0)));
        assert!(at("0.100.0").ollama_at_least((0, 14, 0)));
        assert!(at("dev").ollama_at_least((9, 0, 0)));
    }

    #[test]
    fn patches_change_only_given_fields() {
        let mut f = Faults::default();
        f.apply(&FaultsPatch {
            hang: Some(true),
            ..Default::default()
        });
        f.apply(&FaultsPatch {
            slowdown: Some(2.0),
            ..Default::default()
        });
        assert!(f.hang);
        assert_eq!(f.slowdown, 2.0);
        f.apply(&FaultsPatch {
            clear: true,
            ..Default::default()
        });
        assert_eq!(f, Faults::default());
    }
}
