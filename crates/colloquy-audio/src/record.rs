//! The record-log format: how captured chunks are stored and read back.
//!
//! A log is a plain concatenation of records, each
//! `offset_ms: i64 (LE) | len: u32 (LE) | len bytes`,
//! where `offset_ms` is the chunk's arrival time relative to the chat start.
//! Records are read one at a time, so memory stays bounded by the largest record.

use std::io::{self, Read, Write};

use crate::AudioError;

/// Largest record accepted when reading (a single chunk; real chunks are far smaller).
pub const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

/// Appends one record to a record log.
pub fn write_record<W: Write>(w: &mut W, offset_ms: i64, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= MAX_RECORD_LEN)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("record of {} bytes exceeds {MAX_RECORD_LEN}", bytes.len()),
            )
        })?;
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&offset_ms.to_le_bytes());
    header[8..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&header)?;
    w.write_all(bytes)
}

/// Reads a record log one record at a time, reusing one buffer.
#[derive(Debug)]
pub struct RecordReader<R> {
    inner: R,
    buf: Vec<u8>,
    index: u64,
}

impl<R: Read> RecordReader<R> {
    /// Wraps a reader positioned at the start of a record log.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            index: 0,
        }
    }

    /// The next record as `(offset_ms, bytes)`, or `None` at a clean end of the log.
    ///
    /// A log that ends inside a record is an error ([`AudioError::RecordLog`]).
    pub fn next_record(&mut self) -> Result<Option<(i64, &[u8])>, AudioError> {
        let mut header = [0u8; 12];
        let got = read_full(&mut self.inner, &mut header)?;
        if got == 0 {
            return Ok(None);
        }
        if got < header.len() {
            return Err(AudioError::RecordLog(format!(
                "record {} header truncated after {got} bytes",
                self.index
            )));
        }
        let offset_ms = i64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        if len > MAX_RECORD_LEN {
            return Err(AudioError::RecordLog(format!(
                "record {} declares {len} bytes (limit {MAX_RECORD_LEN})",
                self.index
            )));
        }
        let len = len as usize;
        self.buf.resize(len, 0);
        let got = read_full(&mut self.inner, &mut self.buf)?;
        if got < len {
            return Err(AudioError::RecordLog(format!(
                "record {} truncated: {got} of {len} bytes",
                self.index
            )));
        }
        self.index += 1;
        Ok(Some((offset_ms, &self.buf[..])))
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut log = Vec::new();
        write_record(&mut log, -5, b"abc").unwrap();
        write_record(&mut log, 1234, b"").unwrap();
        write_record(&mut log, 99, &[7u8; 1000]).unwrap();
        let mut r = RecordReader::new(&log[..]);
        assert_eq!(r.next_record().unwrap(), Some((-5, &b"abc"[..])));
        assert_eq!(r.next_record().unwrap(), Some((1234, &b""[..])));
        let (off, bytes) = r.next_record().unwrap().unwrap();
        assert_eq!((off, bytes.len()), (99, 1000));
        assert_eq!(r.next_record().unwrap(), None);

        let mut r = RecordReader::new(&log[..log.len() - 1]);
        r.next_record().unwrap();
        r.next_record().unwrap();
        assert!(matches!(r.next_record(), Err(AudioError::RecordLog(_))));
        let mut r = RecordReader::new(&log[..5]);
        assert!(matches!(r.next_record(), Err(AudioError::RecordLog(_))));
    }
}
