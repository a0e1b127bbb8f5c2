//! The built-in voice on a system whose espeak-ng data files are missing: `ESPEAK_DATA_PATH`
//! points at an empty `espeak-ng-data` directory. In a process of its own, because the engine
//! starts once per process.

use colloquy_speech::{EspeakOptions, EspeakVoice, VoiceError};

#[test]
fn missing_data_is_unavailable_and_names_the_packages() {
    if !colloquy_testkit::alone_in_own_process(
        "espeak_without_data::missing_data_is_unavailable_and_names_the_packages",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("colloquy-no-espeak-data-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("espeak-ng-data")).unwrap();
    std::env::set_var("ESPEAK_DATA_PATH", &dir);
    let err = EspeakVoice::new(EspeakOptions::default()).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(err, VoiceError::Unavailable(_)), "{err}");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("apt-get install libespeak-ng1 espeak-ng-data"),
        "{text}"
    );
    // With the library installed (as for the other tests) it is the data that is missing.
    assert!(text.contains("could not load its data files"), "{text}");
    // The outcome is kept: a second voice fails the same way, without starting again.
    let again = EspeakVoice::new(EspeakOptions::default()).unwrap_err();
    assert_eq!(again.to_string(), text);
}
