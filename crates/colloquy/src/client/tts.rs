//! `colloquy tts` and `colloquy voices`: text to speech and the voice library
//! (`/v0/tts/file`, `/v0/tts/voices`) of Colloquy or the hosted API.

use super::output::{self, Table};
use super::Connection;
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Output format of `colloquy tts`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TtsFormat {
    /// MPEG audio (default).
    Mp3,
    /// RIFF WAVE, 16-bit PCM.
    Wav,
}

/// Arguments of `colloquy tts`.
#[derive(Args)]
pub struct TtsArgs {
    /// The text to speak.
    text: String,
    /// A voice name: one of yours (saved), else from the library (`colloquy voices`).
    #[arg(long, value_name = "NAME")]
    voice: Option<String>,
    /// Audio format.
    #[arg(long, value_enum, default_value = "mp3")]
    format: TtsFormat,
    /// Where to write the audio (`-` for stdout); default `tts.<format>`.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    conn: Connection,
}

/// Arguments of `colloquy voices`.
#[derive(Args)]
pub struct VoicesArgs {
    /// Print a JSON array of the voices (the API's `ReturnVoice` objects).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// An HTTP client and the key.
fn http(conn: &Connection) -> anyhow::Result<(reqwest::Client, String, String)> {
    let key = conn
        .api_key
        .clone()
        .filter(|k| !k.trim().is_empty())
        .context("no API key: pass --api-key or set HUME_API_KEY")?;
    let base = conn.base_url.trim_end_matches('/').to_string();
    Ok((reqwest::Client::new(), base, key))
}

/// The response, or one line saying why it failed.
async fn checked(
    base: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> anyhow::Result<reqwest::Response> {
    let response = sent.map_err(|e| anyhow::anyhow!("could not reach {base}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v["message"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["detail"][0]["msg"].as_str().map(str::to_string))
        })
        .unwrap_or(body);
    match status.as_u16() {
        401 => bail!("the API key was rejected (401): {detail}"),
        code => bail!("the server refused ({code}): {detail}"),
    }
}

/// Runs `colloquy tts`.
pub async fn run_tts(args: TtsArgs) -> anyhow::Result<()> {
    let (client, base, key) = http(&args.conn)?;
    let format = match args.format {
        TtsFormat::Mp3 => "mp3",
        TtsFormat::Wav => "wav",
    };
    let mut utterance = json!({"text": args.text});
    if let Some(name) = &args.voice {
        // No provider: the server looks in your saved voices, then in the library.
        utterance["voice"] = json!({"name": name});
    }
    let body = json!({"utterances": [utterance], "format": {"type": format}});
    let sent = client
        .post(format!("{base}/v0/tts/file"))
        .header("X-Hume-Api-Key", &key)
        .json(&body)
        .send()
        .await;
    let audio = checked(&base, sent)
        .await?
        .bytes()
        .await
        .with_context(|| format!("the answer from {base} broke off"))?;
    let path = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("tts.{format}")));
    if path.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&audio)?;
        return Ok(());
    }
    std::fs::write(&path, &audio).with_context(|| format!("could not write {}", path.display()))?;
    eprintln!("Wrote {} ({} bytes).", path.display(), audio.len());
    Ok(())
}

/// Every voice of `provider`, paging to the end.
async fn all_voices(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    provider: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for page in 0.. {
        let sent = client
            .get(format!("{base}/v0/tts/voices"))
            .header("X-Hume-Api-Key", key)
            .query(&[
                ("provider", provider),
                ("page_size", "100"),
                ("page_number", &page.to_string()),
            ])
            .send()
            .await;
        let body: Value = checked(base, sent)
            .await?
            .json()
            .await
            .context("the voice list is not JSON")?;
        let items = body["voices_page"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        out.extend(items);
        if body["total_pages"].as_u64().is_some_and(|t| page + 1 >= t) {
            break;
        }
    }
    Ok(out)
}

/// Runs `colloquy voices`.
pub async fn run_voices(args: VoicesArgs) -> anyhow::Result<()> {
    let (client, base, key) = http(&args.conn)?;
    let mut voices = all_voices(&client, &base, &key, "CUSTOM_VOICE").await?;
    voices.extend(all_voices(&client, &base, &key, "HUME_AI").await?);
    if args.json {
        return output::print_json(&voices);
    }
    let mut t = Table::new(&["NAME", "PROVIDER", "ID"]);
    for v in &voices {
        t.row(vec![
            v["name"].as_str().unwrap_or("").to_string(),
            v["provider"].as_str().unwrap_or("").to_string(),
            v["id"].as_str().unwrap_or("").to_string(),
        ]);
    }
    output::print(&t.render())?;
    Ok(())
}
