//! Text to speech: the [`Voice`] trait and the built-in offline voice, [`EspeakVoice`].
//!
//! [`EspeakVoice`] links the system's espeak-ng library (Debian/Ubuntu packages
//! `libespeak-ng-dev` and `espeak-ng-data`). It needs no network and synthesizes a
//! sentence in a few milliseconds. espeak-ng keeps global state and its C API is not
//! thread-safe, so every call in the process goes through **one dedicated thread**
//! (started on first use) that owns the library; `EspeakVoice` values are cheap handles
//! that send it jobs over a channel.
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

#[cfg(feature = "espeak")]
pub use espeak::EspeakVoice;

/// The espeak-ng voice (cargo feature `espeak`, on by default): links the system library.
#[cfg(feature = "espeak")]
mod espeak {
    use super::*;
    use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CString};
    use std::path::PathBuf;
    use std::sync::{mpsc, OnceLock};
    use tokio::sync::oneshot;

    /// The built-in offline voice (espeak-ng). Clone freely; all clones share the one engine.
    #[derive(Debug, Clone)]
    pub struct EspeakVoice {
        options: EspeakOptions,
        engine: &'static Engine,
    }

    impl EspeakVoice {
        /// Starts the engine if needed (first call in the process) and checks that `options.voice`
        /// exists by synthesizing nothing with it.
        ///
        /// The data files are found where the library was built to look (Debian:
        /// `/usr/lib/x86_64-linux-gnu/espeak-ng-data`) unless the `ESPEAK_DATA_PATH`
        /// environment variable names another directory.
        pub fn new(options: EspeakOptions) -> Result<Self, VoiceError> {
            let engine = engine()?;
            let voice = Self { options, engine };
            voice.run_blocking(String::new())?;
            Ok(voice)
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
    }

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
            .get_or_init(start_engine)
            .as_ref()
            .map_err(|e| VoiceError::Unavailable(e.clone()))
    }

    fn start_engine() -> Result<Engine, String> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u32, String>>();
        std::thread::Builder::new()
            .name("espeak-ng".into())
            .spawn(move || {
                let rate = match ffi_init() {
                    Ok(rate) => rate,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rate));
                let mut current: Option<EspeakOptions> = None;
                for job in jobs_rx {
                    let result = ffi_synth(&job.text, &job.options, &mut current);
                    match job.reply {
                        Reply::Async(tx) => drop(tx.send(result)),
                        Reply::Blocking(tx) => drop(tx.send(result)),
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

    // espeak-ng's `speak_lib.h`, only what we use.
    const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
    const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
    const POS_CHARACTER: c_int = 1;
    const ESPEAK_CHARS_UTF8: c_uint = 1;
    const ESPEAK_RATE: c_int = 1;
    const ESPEAK_PITCH: c_int = 3;
    const EE_OK: c_int = 0;

    type SynthCallback = extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;

    #[link(name = "espeak-ng")]
    extern "C" {
        fn espeak_Initialize(
            output: c_int,
            buflength: c_int,
            path: *const c_char,
            options: c_int,
        ) -> c_int;
        fn espeak_SetSynthCallback(cb: SynthCallback);
        fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
        fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
        #[allow(clippy::too_many_arguments)]
        fn espeak_Synth(
            text: *const c_void,
            size: usize,
            position: c_uint,
            position_type: c_int,
            end_position: c_uint,
            flags: c_uint,
            unique_identifier: *mut c_uint,
            user_data: *mut c_void,
        ) -> c_int;
        fn espeak_Synchronize() -> c_int;
    }

    thread_local! {
        static SAMPLES: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Called by espeak-ng on the engine thread (synchronous mode) with each block of samples.
    extern "C" fn collect_samples(wav: *mut c_short, count: c_int, _events: *mut c_void) -> c_int {
        if !wav.is_null() && count > 0 {
            // SAFETY: espeak-ng passes a buffer of `count` samples valid for this call.
            let block = unsafe { std::slice::from_raw_parts(wav, count as usize) };
            SAMPLES.with(|s| s.borrow_mut().extend_from_slice(block));
        }
        0 // continue
    }

    fn ffi_init() -> Result<u32, String> {
        let path = std::env::var_os("ESPEAK_DATA_PATH").map(PathBuf::from);
        let path = path
            .map(|p| {
                CString::new(p.into_os_string().into_encoded_bytes())
                    .map_err(|_| "ESPEAK_DATA_PATH contains a NUL byte".to_string())
            })
            .transpose()?;
        // SAFETY: called once, on the thread that owns the library from now on; the path (if
        // any) is a valid C string that outlives the call.
        let rate = unsafe {
            espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                200,
                path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
                ESPEAK_INITIALIZE_DONT_EXIT,
            )
        };
        if rate <= 0 {
            return Err(
                "espeak_Initialize failed (are the espeak-ng-data files installed? \
                        Debian/Ubuntu: apt-get install espeak-ng-data; or set ESPEAK_DATA_PATH)"
                    .to_string(),
            );
        }
        // SAFETY: `collect_samples` matches `t_espeak_callback` (the event pointer is opaque).
        unsafe { espeak_SetSynthCallback(collect_samples) };
        Ok(rate as u32)
    }

    fn ffi_synth(
        text: &str,
        options: &EspeakOptions,
        current: &mut Option<EspeakOptions>,
    ) -> Result<Vec<i16>, VoiceError> {
        if current.as_ref() != Some(options) {
            let name = CString::new(options.voice.as_str())
                .map_err(|_| VoiceError::Synthesis("voice name contains a NUL byte".into()))?;
            // SAFETY: engine thread only; valid C string.
            let rc = unsafe { espeak_SetVoiceByName(name.as_ptr()) };
            if rc != EE_OK {
                *current = None;
                return Err(VoiceError::Synthesis(format!(
                    "unknown voice `{}`",
                    options.voice
                )));
            }
            // SAFETY: engine thread only; plain integers.
            unsafe {
                espeak_SetParameter(ESPEAK_RATE, options.rate_wpm.clamp(80, 450) as c_int, 0);
                espeak_SetParameter(ESPEAK_PITCH, options.pitch.min(100) as c_int, 0);
            }
            *current = Some(options.clone());
        }
        let clean: String = text.chars().filter(|&c| c != '\0').collect();
        if clean.trim().is_empty() {
            return Ok(Vec::new());
        }
        let c_text = CString::new(clean).expect("NUL bytes removed");
        SAMPLES.with(|s| s.borrow_mut().clear());
        // SAFETY: engine thread only; the text is a NUL-terminated UTF-8 buffer of the given size
        // that outlives the (synchronous) call.
        let rc = unsafe {
            let bytes = c_text.as_bytes_with_nul();
            let rc = espeak_Synth(
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                POS_CHARACTER,
                0,
                ESPEAK_CHARS_UTF8,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            espeak_Synchronize();
            rc
        };
        let samples = SAMPLES.with(|s| std::mem::take(&mut *s.borrow_mut()));
        if rc != EE_OK {
            return Err(VoiceError::Synthesis(format!("espeak_Synth returned {rc}")));
        }
        Ok(samples)
    }
}
