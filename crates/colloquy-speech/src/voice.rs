//! Text to speech: the [`Voice`] trait and the built-in offline voice, [`EspeakVoice`].
//!
//! [`EspeakVoice`] uses the system's espeak-ng library, **loaded at run time** (`dlopen` of
//! `libespeak-ng.so.1`, else `libespeak-ng.so`), so building needs nothing but Rust; running
//! it needs the Debian/Ubuntu packages `libespeak-ng1` and `espeak-ng-data` (without them
//! [`EspeakVoice::new`] returns [`VoiceError::Unavailable`] saying so). It needs no network
//! and synthesizes a sentence in a few milliseconds. espeak-ng keeps global state and its C
//! API is not thread-safe, so every call in the process goes through **one dedicated
//! thread** (started on first use) that loads and owns the library; `EspeakVoice` values
//! are cheap handles that send it jobs over a channel.
//!
//! The other implementation is the HTTP speech client,
//! [`SpeechClient`](crate::openai::SpeechClient) (`/v1/audio/speech`), so an engine can
//! hold an `Arc<dyn Voice>` and not care which one it has.

use async_trait::async_trait;

use crate::openai::ServiceError;
use crate::pcm::Pcm;

/// Why speech could not be synthesized.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// The offline voice could not start (library or data files missing).
    #[error("the built-in voice (espeak-ng) is unavailable: {0}")]
    Unavailable(String),
    /// The offline voice refused the text or the voice settings.
    #[error("the built-in voice (espeak-ng) failed: {0}")]
    Synthesis(String),
    /// The speech service failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Something that turns text into mono PCM.
#[async_trait]
pub trait Voice: Send + Sync {
    /// Speaks `text` (typically one sentence). Empty or blank text gives empty audio.
    async fn synthesize(&self, text: &str) -> Result<Pcm, VoiceError>;
}

/// Settings of the built-in voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspeakOptions {
    /// espeak-ng voice name, e.g. `"en-us"`, `"en"`, `"de"` (`espeak-ng --voices` lists them).
    pub voice: String,
    /// Speaking rate in words per minute (80–450; espeak's default is 175).
    pub rate_wpm: u32,
    /// Pitch, 0–100 (default 50).
    pub pitch: u32,
}

impl Default for EspeakOptions {
    fn default() -> Self {
        Self {
            voice: "en-us".to_string(),
            rate_wpm: 175,
            pitch: 50,
        }
    }
}

pub use espeak::EspeakVoice;

/// One piece of speech streamed by [`EspeakVoice::synthesize_stream`], in the order the
/// engine produces them (an event comes with, or before, the block of samples it falls in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeechPiece {
    /// The next samples, at [`EspeakVoice::sample_rate`].
    Audio(Vec<i16>),
    /// A word starts: its characters in the text (`start` and `len` count Unicode scalar
    /// values, not bytes) and the time, from the start of this synthesis, at which it is
    /// spoken (espeak-ng's own word event).
    Word {
        /// Index of the word's first character in the text.
        start: usize,
        /// Length in characters.
        len: usize,
        /// Milliseconds from the start of the audio.
        at_ms: u32,
    },
    /// A phoneme starts (espeak-ng's phoneme event; `name` in IPA).
    Phoneme {
        /// The phoneme, in IPA.
        name: String,
        /// Milliseconds from the start of the audio.
        at_ms: u32,
    },
}

/// The receiving end of a streamed synthesis: pieces as they are made, then the end of the
/// channel; an `Err` item ends it early. Dropping it stops the synthesis.
pub type SpeechStream = tokio::sync::mpsc::UnboundedReceiver<Result<SpeechPiece, VoiceError>>;

/// The packages the built-in voice needs at run time, as said in its error messages.
pub const ESPEAK_INSTALL_HINT: &str =
    "on Debian/Ubuntu install it with: apt-get install libespeak-ng1 espeak-ng-data";

/// The espeak-ng voice: the system library, loaded at run time by the engine thread.
mod espeak {
    use super::*;
    use libloading::Library;
    use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CStr, CString};
    use std::path::PathBuf;
    use std::sync::{mpsc, OnceLock};
    use tokio::sync::oneshot;

    /// The library's file names, tried in order: the run-time package's soname, then the
    /// unversioned name of a development install.
    const LIBRARY_NAMES: &[&str] = &["libespeak-ng.so.1", "libespeak-ng.so"];

    /// The built-in offline voice (espeak-ng). Clone freely; all clones share the one engine.
    #[derive(Debug, Clone)]
    pub struct EspeakVoice {
        options: EspeakOptions,
        engine: &'static Engine,
    }

    impl EspeakVoice {
        /// Starts the engine if needed (first call in the process: loads the library and its
        /// data) and checks that `options.voice` exists by synthesizing nothing with it.
        ///
        /// [`VoiceError::Unavailable`] when the library or its data files are missing (the
        /// message names the packages to install); the outcome of the first start is kept
        /// for the life of the process.
        ///
        /// The data files are found where the library was built to look (Debian:
        /// `/usr/lib/x86_64-linux-gnu/espeak-ng-data`) unless the `ESPEAK_DATA_PATH`
        /// environment variable names the directory that holds `espeak-ng-data`.
        pub fn new(options: EspeakOptions) -> Result<Self, VoiceError> {
            let engine = engine()?;
            let voice = Self { options, engine };
            voice.run_blocking(String::new())?;
            Ok(voice)
        }

        /// Another handle on the same engine speaking with `options`, without checking
        /// them (an unknown voice name fails each synthesis instead). Does not block.
        pub fn with_options(&self, options: EspeakOptions) -> Self {
            Self {
                options,
                engine: self.engine,
            }
        }

        /// The engine's native sample rate (22 050 Hz for espeak-ng).
        pub fn sample_rate(&self) -> u32 {
            self.engine.sample_rate
        }

        /// The settings this handle speaks with.
        pub fn options(&self) -> &EspeakOptions {
            &self.options
        }

        /// Synthesizes `text`, blocking the calling thread. Do not call this from an async
        /// task (use [`Voice::synthesize`]).
        pub fn synthesize_blocking(&self, text: &str) -> Result<Pcm, VoiceError> {
            self.run_blocking(text.to_string())
        }

        /// Synthesizes `text` as a stream of [`SpeechPiece`]s: samples leave the engine thread
        /// in blocks of about 50 ms as espeak-ng makes them, with the word and phoneme events
        /// (timed by the engine), so the first audio arrives long before a long text is done.
        /// The synthesis stops early when the receiver is dropped. Queued behind the other
        /// jobs of the one engine thread.
        pub fn synthesize_stream(&self, text: &str) -> Result<SpeechStream, VoiceError> {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            self.submit(text.to_string(), Reply::Stream(tx))?;
            Ok(rx)
        }

        fn submit(&self, text: String, reply: Reply) -> Result<(), VoiceError> {
            let job = Job {
                text,
                options: self.options.clone(),
                reply,
            };
            self.engine.jobs.send(job).map_err(|_| stopped())
        }

        fn run_blocking(&self, text: String) -> Result<Pcm, VoiceError> {
            let (tx, rx) = mpsc::channel();
            self.submit(text, Reply::Blocking(tx))?;
            let samples = rx.recv().map_err(|_| stopped())??;
            Ok(Pcm::new(samples, self.engine.sample_rate))
        }
    }

    #[async_trait]
    impl Voice for EspeakVoice {
        async fn synthesize(&self, text: &str) -> Result<Pcm, VoiceError> {
            if text.trim().is_empty() {
                return Ok(Pcm::new(Vec::new(), self.engine.sample_rate));
            }
            let (tx, rx) = oneshot::channel();
            self.submit(text.to_string(), Reply::Async(tx))?;
            let samples = rx.await.map_err(|_| stopped())??;
            Ok(Pcm::new(samples, self.engine.sample_rate))
        }
    }

    // ---- the engine thread ----------------------------------------------------------------------

    fn stopped() -> VoiceError {
        VoiceError::Unavailable("the espeak-ng thread has stopped".into())
    }

    type Samples = Result<Vec<i16>, VoiceError>;

    /// Where a job's result goes: a task awaiting it, or a thread blocked on it.
    enum Reply {
        Async(oneshot::Sender<Samples>),
        Blocking(mpsc::Sender<Samples>),
        Stream(StreamSink),
    }

    type StreamSink = tokio::sync::mpsc::UnboundedSender<Result<SpeechPiece, VoiceError>>;

    struct Job {
        text: String,
        options: EspeakOptions,
        reply: Reply,
    }

    struct Engine {
        jobs: mpsc::Sender<Job>,
        sample_rate: u32,
    }

    impl std::fmt::Debug for Engine {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Engine")
                .field("sample_rate", &self.sample_rate)
                .finish_non_exhaustive()
        }
    }

    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

    fn engine() -> Result<&'static Engine, VoiceError> {
        ENGINE
            .get_or_init(|| {
                let data = std::env::var_os("ESPEAK_DATA_PATH").map(PathBuf::from);
                start_engine(LIBRARY_NAMES, data)
            })
            .as_ref()
            .map_err(|e| VoiceError::Unavailable(e.clone()))
    }

    /// Starts the thread that loads the library (the first of `names` that loads), initializes
    /// it with the data under `data` (default: the library's own path) and then owns it.
    fn start_engine(names: &[&str], data: Option<PathBuf>) -> Result<Engine, String> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u32, String>>();
        std::thread::Builder::new()
            .name("espeak-ng".into())
            .spawn(move || {
                let (api, rate) = match Api::load(&names).and_then(|api| {
                    let rate = api.initialize(data)?;
                    Ok((api, rate))
                }) {
                    Ok(ready) => ready,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rate));
                let mut current: Option<EspeakOptions> = None;
                for job in jobs_rx {
                    match job.reply {
                        Reply::Async(tx) => {
                            drop(tx.send(api.synth(&job.text, &job.options, &mut current)))
                        }
                        Reply::Blocking(tx) => {
                            drop(tx.send(api.synth(&job.text, &job.options, &mut current)))
                        }
                        Reply::Stream(tx) => {
                            if tx.is_closed() {
                                continue;
                            }
                            STREAM.with(|s| *s.borrow_mut() = Some(tx.clone()));
                            let result = api.synth(&job.text, &job.options, &mut current);
                            STREAM.with(|s| s.borrow_mut().take());
                            if let Err(e) = result {
                                let _ = tx.send(Err(e));
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("could not start the espeak-ng thread: {e}"))?;
        let sample_rate = ready_rx
            .recv()
            .map_err(|_| "the espeak-ng thread exited during start-up".to_string())??;
        Ok(Engine {
            jobs: jobs_tx,
            sample_rate,
        })
    }

    /// Why the library could not be loaded: `tried` are the file names with their errors.
    pub(super) fn library_missing(tried: &[(String, String)]) -> String {
        let tried: Vec<String> = tried.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        format!(
            "the espeak-ng library could not be loaded ({}); {ESPEAK_INSTALL_HINT}",
            tried.join("; ")
        )
    }

    /// Why espeak-ng could not load its data files.
    pub(super) fn data_missing(detail: &str) -> String {
        format!(
            "espeak-ng could not load its data files ({detail}); {ESPEAK_INSTALL_HINT}, \
             or set ESPEAK_DATA_PATH to the directory that holds espeak-ng-data"
        )
    }

    // espeak-ng's `speak_lib.h` and `espeak_ng.h`, only what we use.
    const ENOUTPUT_MODE_SYNCHRONOUS: c_int = 1;
    const ENS_OK: c_int = 0;
    const POS_CHARACTER: c_int = 1;
    const ESPEAK_CHARS_UTF8: c_uint = 1;
    const ESPEAK_RATE: c_int = 1;
    const ESPEAK_PITCH: c_int = 3;
    const EE_OK: c_int = 0;
    const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
    /// `espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA |
    /// espeakINITIALIZE_DONT_EXIT`.
    const INITIALIZE_OPTIONS: c_int = 0x0001 | 0x0002 | 0x8000;
    /// Milliseconds of audio per callback (and so per streamed block).
    const BUFFER_MS: c_int = 50;
    const EVENT_LIST_TERMINATED: c_int = 0;
    const EVENT_WORD: c_int = 1;
    const EVENT_PHONEME: c_int = 7;

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
        /// The `id` union: a number, a name pointer or up to 8 bytes of phoneme name.
        id: [u8; 8],
    }

    type SynthCallback = extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;
    type ErrorContext = *mut c_void;

    /// The library's functions. Lives on the engine thread only (espeak-ng is not
    /// thread-safe); the pointers stay valid as long as `_library` is loaded.
    struct Api {
        _library: Library,
        initialize_path: unsafe extern "C" fn(*const c_char),
        initialize: unsafe extern "C" fn(*mut ErrorContext) -> c_int,
        /// The older `espeak_Initialize`, called after the checked start only for its option
        /// that turns phoneme events on (nothing else sets it).
        initialize_legacy: unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int,
        clear_error_context: unsafe extern "C" fn(*mut ErrorContext),
        status_message: unsafe extern "C" fn(c_int, *mut c_char, usize),
        initialize_output: unsafe extern "C" fn(c_int, c_int, *const c_char) -> c_int,
        sample_rate: unsafe extern "C" fn() -> c_int,
        set_synth_callback: unsafe extern "C" fn(SynthCallback),
        set_voice_by_name: unsafe extern "C" fn(*const c_char) -> c_int,
        set_parameter: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int,
        #[allow(clippy::type_complexity)]
        synth: unsafe extern "C" fn(
            *const c_void,
            usize,
            c_uint,
            c_int,
            c_uint,
            c_uint,
            *mut c_uint,
            *mut c_void,
        ) -> c_int,
        synchronize: unsafe extern "C" fn() -> c_int,
    }

    impl Api {
        /// Loads the first of `names` that loads and looks up every function.
        fn load(names: &[String]) -> Result<Self, String> {
            let mut tried = Vec::new();
            for name in names {
                // SAFETY: loading espeak-ng runs its (trivial) initializers; nothing else runs.
                match unsafe { Library::new(name) } {
                    Ok(library) => return Self::bind(library, name),
                    Err(e) => tried.push((name.clone(), e.to_string())),
                }
            }
            Err(library_missing(&tried))
        }

        fn bind(library: Library, name: &str) -> Result<Self, String> {
            /// Copies the function pointer named `symbol` out of the library.
            fn get<T: Copy>(library: &Library, name: &str, symbol: &str) -> Result<T, String> {
                // SAFETY: every `T` used below is the C signature of that symbol in
                // espeak-ng's headers (1.49 and later).
                unsafe { library.get::<T>(symbol.as_bytes()) }
                    .map(|s| *s)
                    .map_err(|e| {
                        format!("{name} has no {symbol} ({e}); espeak-ng 1.49 or later is needed")
                    })
            }
            Ok(Self {
                initialize_path: get(&library, name, "espeak_ng_InitializePath")?,
                initialize: get(&library, name, "espeak_ng_Initialize")?,
                initialize_legacy: get(&library, name, "espeak_Initialize")?,
                clear_error_context: get(&library, name, "espeak_ng_ClearErrorContext")?,
                status_message: get(&library, name, "espeak_ng_GetStatusCodeMessage")?,
                initialize_output: get(&library, name, "espeak_ng_InitializeOutput")?,
                sample_rate: get(&library, name, "espeak_ng_GetSampleRate")?,
                set_synth_callback: get(&library, name, "espeak_SetSynthCallback")?,
                set_voice_by_name: get(&library, name, "espeak_SetVoiceByName")?,
                set_parameter: get(&library, name, "espeak_SetParameter")?,
                synth: get(&library, name, "espeak_Synth")?,
                synchronize: get(&library, name, "espeak_Synchronize")?,
                _library: library,
            })
        }

        /// Loads the data files (from `data`/espeak-ng-data, else the library's default) and
        /// sets up synchronous output into [`collect_samples`]; the sample rate.
        fn initialize(&self, data: Option<PathBuf>) -> Result<u32, String> {
            let path = data
                .map(|p| {
                    CString::new(p.into_os_string().into_encoded_bytes())
                        .map_err(|_| "ESPEAK_DATA_PATH contains a NUL byte".to_string())
                })
                .transpose()?;
            let mut context: ErrorContext = std::ptr::null_mut();
            // SAFETY: called once, on the thread that owns the library from now on; the path
            // (if any) is a valid C string that outlives the call, and `context` is freed by
            // the library's own function.
            let status = unsafe {
                (self.initialize_path)(path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()));
                let status = (self.initialize)(&mut context);
                (self.clear_error_context)(&mut context);
                status
            };
            if status != ENS_OK {
                return Err(data_missing(&self.describe(status)));
            }
            // SAFETY: as above; the data are known to load now, and DONT_EXIT keeps a failure
            // from exiting the process. Only the phoneme-event option matters here.
            unsafe {
                (self.initialize_legacy)(
                    AUDIO_OUTPUT_SYNCHRONOUS,
                    BUFFER_MS,
                    path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
                    INITIALIZE_OPTIONS,
                );
            }
            // SAFETY: engine thread; no device name in synchronous mode. `collect_samples`
            // matches `t_espeak_callback` (the event pointer is opaque).
            let (status, rate) = unsafe {
                let status = (self.initialize_output)(
                    ENOUTPUT_MODE_SYNCHRONOUS,
                    BUFFER_MS,
                    std::ptr::null(),
                );
                (self.set_synth_callback)(collect_samples);
                (status, (self.sample_rate)())
            };
            if status != ENS_OK {
                return Err(format!(
                    "espeak-ng could not set up its output: {}",
                    self.describe(status)
                ));
            }
            u32::try_from(rate)
                .ok()
                .filter(|&r| r > 0)
                .ok_or_else(|| format!("espeak-ng reported a sample rate of {rate}"))
        }

        /// espeak-ng's text for a status code.
        fn describe(&self, status: c_int) -> String {
            let mut buf = [0 as c_char; 512];
            // SAFETY: engine thread; the library writes a NUL-terminated string of at most
            // `buf.len()` bytes.
            unsafe { (self.status_message)(status, buf.as_mut_ptr(), buf.len()) };
            buf[buf.len() - 1] = 0;
            // SAFETY: NUL-terminated above at the latest.
            let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
            format!("{} (status {status:#x})", text.trim())
        }

        fn synth(
            &self,
            text: &str,
            options: &EspeakOptions,
            current: &mut Option<EspeakOptions>,
        ) -> Result<Vec<i16>, VoiceError> {
            if current.as_ref() != Some(options) {
                let name = CString::new(options.voice.as_str())
                    .map_err(|_| VoiceError::Synthesis("voice name contains a NUL byte".into()))?;
                // SAFETY: engine thread only; valid C string.
                let rc = unsafe { (self.set_voice_by_name)(name.as_ptr()) };
                if rc != EE_OK {
                    *current = None;
                    return Err(VoiceError::Synthesis(format!(
                        "unknown voice `{}`",
                        options.voice
                    )));
                }
                // SAFETY: engine thread only; plain integers.
                unsafe {
                    (self.set_parameter)(ESPEAK_RATE, options.rate_wpm.clamp(80, 450) as c_int, 0);
                    (self.set_parameter)(ESPEAK_PITCH, options.pitch.min(100) as c_int, 0);
                }
                *current = Some(options.clone());
            }
            let clean: String = text.chars().filter(|&c| c != '\0').collect();
            if clean.trim().is_empty() {
                return Ok(Vec::new());
            }
            let c_text = CString::new(clean).expect("NUL bytes removed");
            SAMPLES.with(|s| s.borrow_mut().clear());
            // SAFETY: engine thread only; the text is a NUL-terminated UTF-8 buffer of the
            // given size that outlives the (synchronous) call.
            let rc = unsafe {
                let bytes = c_text.as_bytes_with_nul();
                let rc = (self.synth)(
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    POS_CHARACTER,
                    0,
                    ESPEAK_CHARS_UTF8,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
                (self.synchronize)();
                rc
            };
            let samples = SAMPLES.with(|s| std::mem::take(&mut *s.borrow_mut()));
            if rc != EE_OK {
                return Err(VoiceError::Synthesis(format!("espeak_Synth returned {rc}")));
            }
            Ok(samples)
        }
    }

    thread_local! {
        static SAMPLES: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
        /// Where a streamed job's pieces go (`None`: collect into `SAMPLES`).
        static STREAM: std::cell::RefCell<Option<StreamSink>> = const { std::cell::RefCell::new(None) };
    }

    /// The word and phoneme events of a callback's list, in order.
    ///
    /// # Safety
    /// `events` is null or points at an array terminated by an `EVENT_LIST_TERMINATED` entry,
    /// valid for this call (espeak-ng's callback contract).
    unsafe fn read_events(events: *const Event) -> Vec<SpeechPiece> {
        let mut out = Vec::new();
        if events.is_null() {
            return out;
        }
        let mut e = events;
        while (*e).kind != EVENT_LIST_TERMINATED {
            let at_ms = (*e).audio_position.max(0) as u32;
            match (*e).kind {
                EVENT_WORD => out.push(SpeechPiece::Word {
                    // espeak-ng counts characters from 1.
                    start: ((*e).text_position - 1).max(0) as usize,
                    len: (*e).length.max(0) as usize,
                    at_ms,
                }),
                EVENT_PHONEME => {
                    let bytes = &(*e).id;
                    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                    let name = String::from_utf8_lossy(&bytes[..end]).into_owned();
                    if !name.is_empty() {
                        out.push(SpeechPiece::Phoneme { name, at_ms });
                    }
                }
                _ => {}
            }
            e = e.add(1);
        }
        out
    }

    /// Called by espeak-ng on the engine thread (synchronous mode) with each block of samples
    /// and the events that fall in it. Returns 1 (stop) when a streamed job's receiver is gone.
    extern "C" fn collect_samples(wav: *mut c_short, count: c_int, events: *mut c_void) -> c_int {
        let block: &[i16] = if !wav.is_null() && count > 0 {
            // SAFETY: espeak-ng passes a buffer of `count` samples valid for this call.
            unsafe { std::slice::from_raw_parts(wav, count as usize) }
        } else {
            &[]
        };
        let streamed = STREAM.with(|s| {
            let s = s.borrow();
            let sink = s.as_ref()?;
            // SAFETY: the event list of this callback, as espeak-ng documents it.
            let pieces = unsafe { read_events(events as *const Event) };
            let mut open = true;
            for piece in pieces {
                open &= sink.send(Ok(piece)).is_ok();
            }
            if !block.is_empty() {
                open &= sink.send(Ok(SpeechPiece::Audio(block.to_vec()))).is_ok();
            }
            Some(open)
        });
        match streamed {
            Some(true) => 0,
            Some(false) => 1, // the receiver is gone: stop synthesizing
            None => {
                SAMPLES.with(|s| s.borrow_mut().extend_from_slice(block));
                0 // continue
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_missing_library_is_unavailable_and_names_the_packages() {
            let err = start_engine(&["libespeak-ng-colloquy-test-missing.so.1"], None)
                .map(|_| ())
                .unwrap_err();
            let err = VoiceError::Unavailable(err).to_string();
            assert!(
                err.starts_with("the built-in voice (espeak-ng) is unavailable: "),
                "{err}"
            );
            assert!(
                err.contains("libespeak-ng-colloquy-test-missing.so.1"),
                "{err}"
            );
            assert!(
                err.contains("apt-get install libespeak-ng1 espeak-ng-data"),
                "{err}"
            );
        }

        #[test]
        fn missing_data_names_the_packages() {
            let err = data_missing("No such file or directory (status 0x2)");
            assert!(err.contains("No such file or directory"), "{err}");
            assert!(err.contains("libespeak-ng1 espeak-ng-data"), "{err}");
            assert!(err.contains("ESPEAK_DATA_PATH"), "{err}");
        }
    }
}
