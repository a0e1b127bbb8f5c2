//! Audio capture: each `audio_input` chunk is appended, with its arrival offset from chat
//! start, to a chunk log on disk (`<audio_dir>/<chat_id>/user.chunks`). Nothing of a chat's
//! audio stays in memory beyond one write buffer; the log is flushed at least every 2 s.
//!
//! Record format (little-endian): `offset_ms: i64`, `len: u32`, then `len` bytes.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::fs::{self, File};
use tokio::io::{AsyncWriteExt, BufWriter};

/// How often buffered audio is flushed to disk.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Appends one voice's chunks of one chat.
pub struct ChunkLog {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    last_flush: Instant,
    chunks: u64,
}

impl ChunkLog {
    /// A log at `path`, created on the first chunk.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            last_flush: Instant::now(),
            chunks: 0,
        }
    }

    /// Chunks appended so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Appends a chunk that arrived `offset_ms` after chat start.
    pub async fn append(&mut self, offset_ms: i64, data: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir).await?;
            }
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await?;
            self.file = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(&offset_ms.to_le_bytes()).await?;
        file.write_all(&(data.len() as u32).to_le_bytes()).await?;
        file.write_all(data).await?;
        self.chunks += 1;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            file.flush().await?;
            self.last_flush = Instant::now();
        }
        Ok(())
    }

    /// Flushes and syncs what was written.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush().await?;
            f.get_mut().sync_all().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a chunk log back: `(offset_ms, bytes)` per chunk.
    async fn read_chunks(path: &std::path::Path) -> std::io::Result<Vec<(i64, Vec<u8>)>> {
        let bytes = fs::read(path).await?;
        let mut out = Vec::new();
        let mut i = 0;
        while i + 12 <= bytes.len() {
            let offset = i64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
            let len =
                u32::from_le_bytes(bytes[i + 8..i + 12].try_into().unwrap_or_default()) as usize;
            i += 12;
            if i + len > bytes.len() {
                break; // a torn last record after a crash
            }
            out.push((offset, bytes[i..i + len].to_vec()));
            i += len;
        }
        Ok(out)
    }

    #[tokio::test]
    async fn chunks_round_trip_with_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/user.chunks");
        let mut log = ChunkLog::new(path.clone());
        log.append(0, b"abc").await.unwrap();
        log.append(20, b"defg").await.unwrap();
        log.finish().await.unwrap();
        assert_eq!(
            read_chunks(&path).await.unwrap(),
            vec![(0, b"abc".to_vec()), (20, b"defg".to_vec())]
        );
        assert_eq!(log.chunks(), 2);
    }
}
