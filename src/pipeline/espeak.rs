//! espeak-ng through its library (`libespeak-ng.so.1`, loaded at run time with `dlopen`): one
//! sentence into 16-bit mono PCM, with the position of every word it speaks (its WORD events), which
//! the command-line program does not print.
//!
//! Invariants: the library keeps global state and is not thread-safe, so one synthesis runs at a
//! time (a process-wide lock) on a blocking thread, never on an async worker; a synthesis stops
//! within one audio block once its abort flag is set (the callback answers "abort"); the library is
//! initialised once, with `espeakINITIALIZE_DONT_EXIT` so a missing data folder is an error, not an
//! exit of the daemon. A voice is chosen as the program chooses it (by name, else as a language),
//! so the same text, voice and rate give the speech of `espeak-ng -b 1 -v <voice> -s <rate> -w`
//! (lengths agree within a few per cent).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::timing::WordMark;

/// Why the library could not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EspeakError {
    #[error("the espeak-ng library {library} cannot be loaded: {reason}")]
    Unavailable { library: String, reason: String },
    #[error("espeak-ng has no voice `{0}`")]
    UnknownVoice(String),
    #[error("espeak-ng could not speak the sentence (error {0})")]
    Synth(i32),
    #[error("the text holds a NUL character")]
    BadText,
    #[error("stopped")]
    Aborted,
}

/// One spoken sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Speech {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
    /// Where each word starts (offsets in characters into the text, times from its start).
    pub marks: Vec<WordMark>,
}

/// `espeak_EVENT` of `speak_lib.h`.
#[repr(C)]
struct Event {
    kind: c_int,
    unique_identifier: c_uint,
    text_position: c_int,
    length: c_int,
    audio_position: c_int,
    sample: c_int,
    user_data: *mut c_void,
    id: [u8; 8],
}

/// `espeak_VOICE` of `speak_lib.h`, as a voice selection.
#[repr(C)]
struct VoiceSelect {
    name: *const c_char,
    languages: *const c_char,
    identifier: *const c_char,
    gender: u8,
    age: u8,
    variant: u8,
    xx1: u8,
    score: c_int,
    spare: *mut c_void,
}

const EVENT_LIST_TERMINATED: c_int = 0;
const EVENT_WORD: c_int = 1;
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
const POS_CHARACTER: c_int = 1;
const CHARS_UTF8: c_uint = 1;
const ENDPAUSE: c_uint = 0x1000;
const PARAM_RATE: c_int = 1;
const EE_OK: c_int = 0;

type SynthCallback = extern "C" fn(*mut c_short, c_int, *mut Event) -> c_int;
type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type SetCallbackFn = unsafe extern "C" fn(SynthCallback);
type SetVoiceFn = unsafe extern "C" fn(*const c_char) -> c_int;
type SetVoicePropertiesFn = unsafe extern "C" fn(*mut VoiceSelect) -> c_int;
type SetParameterFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type SynthFn = unsafe extern "C" fn(
    *const c_void,
    usize,
    c_uint,
    c_int,
    c_uint,
    c_uint,
    *mut c_uint,
    *mut c_void,
) -> c_int;

/// The library's entry points.
struct Lib {
    set_voice_by_name: SetVoiceFn,
    set_voice_by_properties: SetVoicePropertiesFn,
    set_parameter: SetParameterFn,
    synth: SynthFn,
    sample_rate: u32,
}

/// What the callback collects during one synthesis (on the synthesising thread).
struct Collect {
    samples: Vec<i16>,
    marks: Vec<(usize, f64)>,
    abort: Arc<AtomicBool>,
}

thread_local! {
    static COLLECT: RefCell<Option<Collect>> = const { RefCell::new(None) };
}

extern "C" fn on_audio(wav: *mut c_short, n: c_int, events: *mut Event) -> c_int {
    COLLECT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return 1 };
        if !wav.is_null() && n > 0 {
            // SAFETY: the library hands `n` samples at `wav`, valid for this call.
            let block = unsafe { std::slice::from_raw_parts(wav, n as usize) };
            c.samples.extend_from_slice(block);
        }
        let mut e = events;
        // SAFETY: `events` is an array ended by an EVENT_LIST_TERMINATED entry, valid for this call.
        unsafe {
            while !e.is_null() && (*e).kind != EVENT_LIST_TERMINATED {
                if (*e).kind == EVENT_WORD && (*e).text_position > 0 {
                    let at = f64::from((*e).audio_position.max(0)) / 1000.0;
                    c.marks.push(((*e).text_position as usize - 1, at));
                }
                e = e.add(1);
            }
        }
        i32::from(c.abort.load(Ordering::Relaxed))
    })
}

/// The loaded library, or why it cannot be; `library` is tried once per process.
fn lib(library: &str) -> Result<&'static Lib, EspeakError> {
    static LIB: OnceLock<Result<Lib, EspeakError>> = OnceLock::new();
    LIB.get_or_init(|| load(library))
        .as_ref()
        .map_err(Clone::clone)
}

fn load(library: &str) -> Result<Lib, EspeakError> {
    let unavailable = |reason: String| EspeakError::Unavailable {
        library: library.to_string(),
        reason,
    };
    let name = CString::new(library).map_err(|_| unavailable("bad name".into()))?;
    // SAFETY: dlopen with a NUL-terminated name; the handle is kept for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(unavailable("not found".into()));
    }
    let sym = |n: &str| -> Result<*mut c_void, EspeakError> {
        let c = CString::new(n).map_err(|_| unavailable("bad symbol".into()))?;
        // SAFETY: dlsym on a live handle with a NUL-terminated name.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        if p.is_null() {
            Err(unavailable(format!("no symbol {n}")))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol is the function of that name in speak_lib.h, with these signatures.
    unsafe {
        let initialize =
            std::mem::transmute::<*mut c_void, InitializeFn>(sym("espeak_Initialize")?);
        let set_callback =
            std::mem::transmute::<*mut c_void, SetCallbackFn>(sym("espeak_SetSynthCallback")?);
        let set_voice_by_name =
            std::mem::transmute::<*mut c_void, SetVoiceFn>(sym("espeak_SetVoiceByName")?);
        let set_parameter =
            std::mem::transmute::<*mut c_void, SetParameterFn>(sym("espeak_SetParameter")?);
        let set_voice_by_properties = std::mem::transmute::<*mut c_void, SetVoicePropertiesFn>(
            sym("espeak_SetVoiceByProperties")?,
        );
        let synth = std::mem::transmute::<*mut c_void, SynthFn>(sym("espeak_Synth")?);
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let rate = initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            std::ptr::null(),
            INITIALIZE_DONT_EXIT,
        );
        if rate <= 0 {
            return Err(unavailable(format!("initialisation failed ({rate})")));
        }
        set_callback(on_audio);
        Ok(Lib {
            set_voice_by_name,
            set_voice_by_properties,
            set_parameter,
            synth,
            sample_rate: rate as u32,
        })
    }
}

/// One synthesis at a time: the library's state is global.
static LOCK: Mutex<()> = Mutex::new(());

/// Whether `library` can be loaded (and is, from then on).
pub fn available(library: &str) -> bool {
    lib(library).is_ok()
}

/// Speaks `text` with espeak-ng voice `voice` (`en-us+f3`) at `rate` words per minute. Blocking:
/// call it from a blocking thread. Stops early, with [`EspeakError::Aborted`], once `abort` is set.
pub fn speak(
    library: &str,
    voice: &str,
    rate: u32,
    text: &str,
    abort: Arc<AtomicBool>,
) -> Result<Speech, EspeakError> {
    let lib = lib(library)?;
    let voice_c = CString::new(voice).map_err(|_| EspeakError::UnknownVoice(voice.into()))?;
    let text_c = CString::new(text).map_err(|_| EspeakError::BadText)?;
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the library is initialised; the strings are NUL-terminated and outlive the calls;
    // the lock makes this the only thread inside the library.
    let mut rc = unsafe { (lib.set_voice_by_name)(voice_c.as_ptr()) };
    if rc != EE_OK {
        // What the program does next: the voice as a language (`fr-fr+m1`).
        let mut select = VoiceSelect {
            name: std::ptr::null(),
            languages: voice_c.as_ptr(),
            identifier: std::ptr::null(),
            gender: 0,
            age: 0,
            variant: 0,
            xx1: 0,
            score: 0,
            spare: std::ptr::null_mut(),
        };
        // SAFETY: as above; `select` and the string it points to outlive the call.
        rc = unsafe { (lib.set_voice_by_properties)(&mut select) };
    }
    if rc != EE_OK {
        return Err(EspeakError::UnknownVoice(voice.into()));
    }
    // SAFETY: as above.
    unsafe { (lib.set_parameter)(PARAM_RATE, rate as c_int, 0) };
    COLLECT.with(|c| {
        *c.borrow_mut() = Some(Collect {
            samples: Vec::new(),
            marks: Vec::new(),
            abort: abort.clone(),
        })
    });
    let bytes = text_c.as_bytes_with_nul();
    // SAFETY: as above; in synchronous mode the callback runs on this thread before it returns.
    let rc = unsafe {
        (lib.synth)(
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            POS_CHARACTER,
            0,
            CHARS_UTF8 | ENDPAUSE,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    let collected = COLLECT.with(|c| c.borrow_mut().take());
    if abort.load(Ordering::Relaxed) {
        return Err(EspeakError::Aborted);
    }
    if rc != EE_OK {
        return Err(EspeakError::Synth(rc));
    }
    let c = collected.ok_or(EspeakError::Synth(-1))?;
    // The library counts characters of the UTF-8 text it was given, from one.
    Ok(Speech {
        sample_rate: lib.sample_rate,
        samples: c.samples,
        marks: c
            .marks
            .into_iter()
            .map(|(offset, time)| WordMark { offset, time })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBRARY: &str = "libespeak-ng.so.1";

    #[test]
    fn words_are_reported_in_order_at_their_offsets_and_the_audio_matches_the_program() {
        let text = "Octopuses have three hearts, and blue blood.";
        let s = speak(
            LIBRARY,
            "en-us+f3",
            165,
            text,
            Arc::new(AtomicBool::new(false)),
        )
        .expect("espeak-ng's library must be installed (apt-get install espeak-ng)");
        let offsets: Vec<usize> = s.marks.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![0, 10, 15, 21, 29, 33, 38], "{:?}", s.marks);
        assert!(
            s.marks.windows(2).all(|w| w[0].time < w[1].time),
            "{:?}",
            s.marks
        );
        assert_eq!(s.sample_rate, 22_050);
        // The program speaks the same samples.
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("p.wav");
        let ok = std::process::Command::new("espeak-ng")
            .args(["-b", "1", "-v", "en-us+f3", "-s", "165", "-w"])
            .arg(&wav)
            .arg(text)
            .status()
            .expect("espeak-ng must be installed")
            .success();
        assert!(ok);
        let program = super::super::voice::Wav::parse(&std::fs::read(&wav).unwrap()).unwrap();
        let (ours, theirs) = (s.samples.len() as f64, program.data.len() as f64 / 2.0);
        assert!(
            (ours - theirs).abs() < 0.01 * 22_050.0,
            "{ours} samples, the program {theirs}"
        );
        let last = s.marks.last().unwrap().time;
        assert!(
            last > 1.0 && last < s.samples.len() as f64 / 22_050.0,
            "{last}"
        );
    }

    #[test]
    fn every_catalogue_voice_speaks_like_the_program() {
        let dir = tempfile::tempdir().unwrap();
        for e in crate::voices::VOICES {
            let s = speak(
                LIBRARY,
                e.espeak,
                165,
                "Three hearts.",
                Arc::new(AtomicBool::new(false)),
            )
            .unwrap_or_else(|err| panic!("{} ({}): {err}", e.id, e.espeak));
            let wav = dir.path().join("p.wav");
            let ok = std::process::Command::new("espeak-ng")
                .args(["-b", "1", "-v", e.espeak, "-s", "165", "-w"])
                .arg(&wav)
                .arg("Three hearts.")
                .status()
                .expect("espeak-ng must be installed")
                .success();
            assert!(ok, "{}", e.espeak);
            let program = super::super::voice::Wav::parse(&std::fs::read(&wav).unwrap()).unwrap();
            let (ours, theirs) = (s.samples.len() as f64, program.data.len() as f64 / 2.0);
            // The same speech, within a few per cent: a voice picked by language (`fr-fr+m1`) may
            // differ by a few ms, and the library's state depends on what it spoke before (after
            // fifty English sentences, `id+f3` speaks "Three hearts." 1% longer; in a whole test
            // run, with other tests speaking in the same process, 3% longer).
            assert!(
                (ours - theirs).abs() < 0.05 * theirs,
                "{}: {ours} samples, the program {theirs}",
                e.espeak
            );
        }
    }

    #[test]
    fn an_abort_stops_the_synthesis_and_a_bad_voice_is_refused() {
        let abort = Arc::new(AtomicBool::new(true));
        let long = "Octopuses have three hearts. ".repeat(50);
        assert_eq!(
            speak(LIBRARY, "en-us", 165, &long, abort),
            Err(EspeakError::Aborted)
        );
        assert_eq!(
            speak(
                LIBRARY,
                "xx-nope",
                165,
                "hi",
                Arc::new(AtomicBool::new(false))
            ),
            Err(EspeakError::UnknownVoice("xx-nope".into()))
        );
        assert!(matches!(
            load("libno-such-espeak.so"),
            Err(EspeakError::Unavailable { .. })
        ));
    }
}
