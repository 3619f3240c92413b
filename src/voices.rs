//! The voice catalogue: MoneyPrinter's voice ids, the espeak-ng voice that speaks each, which of
//! them TikTok speaks, and the script language a voice implies.
//!
//! A leaf: no crate imports, so `request` (which validates `voice` against it), `pipeline` and
//! `providers` all read it without importing each other. An id not in [`VOICES`] is refused at
//! submit time.

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

/// Whether `id` is a voice id this build can speak.
pub fn is_known_voice(id: &str) -> bool {
    voice_entry(id).is_some()
}

/// Whether TikTok's TTS has a voice `id`.
#[cfg(test)]
pub fn is_tiktok_voice(id: &str) -> bool {
    voice_entry(id).is_some_and(|e| e.tiktok)
}

/// The language a script is written in, from the MoneyPrinter voice id; `None` for English.
pub fn language_of_voice(voice: &str) -> Option<&'static str> {
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
