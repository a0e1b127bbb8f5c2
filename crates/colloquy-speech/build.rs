//! Links the system espeak-ng library (Debian/Ubuntu: `libespeak-ng-dev`, plus
//! `espeak-ng-data` at run time) and fails early with the install command when it is missing.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Only the `espeak` feature (the built-in voice) links the library.
    if std::env::var_os("CARGO_FEATURE_ESPEAK").is_none() {
        return;
    }
    match Command::new("pkg-config")
        .args(["--libs-only-L", "espeak-ng"])
        .output()
    {
        Ok(out) if out.status.success() => {
            for dir in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(dir) = dir.strip_prefix("-L") {
                    println!("cargo:rustc-link-search=native={dir}");
                }
            }
        }
        Ok(_) => panic!(
            "colloquy-speech needs the espeak-ng library (the built-in offline voice). \
             On Debian/Ubuntu: sudo apt-get install libespeak-ng-dev espeak-ng-data"
        ),
        // No pkg-config: let the linker look in its default paths.
        Err(_) => {}
    }
    println!("cargo:rustc-link-lib=espeak-ng");
}
