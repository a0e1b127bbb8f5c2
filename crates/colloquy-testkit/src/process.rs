//! One test alone in a process of its own, inside a test binary of many tests.

use std::process::Command;

/// Set (to the test's name) in the process [`alone_in_own_process`] starts.
const ALONE: &str = "COLLOQUY_TESTKIT_ALONE";

/// Runs the test `name` (its path in the test binary, e.g. `memory::bounded_peak_rss`) alone
/// in a fresh process of the running test binary and asserts that it passed there.
///
/// Returns `true` in that fresh process, where the caller goes on to run the test's body, and
/// `false` in the calling process, where the test is then done:
///
/// ```text
/// #[test]
/// fn bounded_peak_rss() {
///     if !colloquy_testkit::alone_in_own_process("memory::bounded_peak_rss") {
///         return;
///     }
///     // measured with no other test in the process
/// }
/// ```
///
/// For a test that measures the whole process (its peak RSS) or sets up what a process sets
/// up only once (a library that reads its environment when it first starts).
pub fn alone_in_own_process(name: &str) -> bool {
    if std::env::var(ALONE).as_deref() == Ok(name) {
        return true;
    }
    let binary = std::env::current_exe().expect("the path of the test binary");
    let out = Command::new(binary)
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(ALONE, name)
        .output()
        .expect("could not run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What the test printed, as if it had run here.
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "{name} failed in a process of its own ({}):\n{stdout}",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run in a process of its own (no such test?):\n{stdout}"
    );
    false
}
