//! Streaming FASTA / FASTA.gz reading, cropping and token-budget batching.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use plm_model::batching::plan_batches;
use plm_model::tokenizer::clean_sequence;

use crate::storage::{self, Location};

/// A FASTA record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Header without `>`.
    pub id: String,
    /// Cleaned, upper-case residues.
    pub sequence: String,
}

/// Errors while reading sequence data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file (path or URL).
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The object cannot be opened.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// A malformed record.
    #[error("{path}: record {record} ('{id}'): {reason}")]
    BadRecord {
        /// The file (path or URL).
        path: String,
        /// 1-based record number.
        record: usize,
        /// Record header.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Streams records from a FASTA file or object (gzip-compressed when the name ends in `.gz`).
///
/// Invalid records are an error naming the file and record, unless `skip_invalid` is set;
/// then they are counted in [`FastaReader::skipped`].
pub struct FastaReader {
    path: String,
    gzip: bool,
    lines: Box<dyn BufRead + Send>,
    pending_header: Option<String>,
    record_no: usize,
    skip_invalid: bool,
    skipped: usize,
    line_buf: String,
}

impl FastaReader {
    /// Opens a file.
    pub fn open(path: &Path, skip_invalid: bool) -> Result<Self, DataError> {
        Self::open_location(&Location::from(path), skip_invalid)
    }

    /// Opens a file or object.
    pub fn open_location(location: &Location, skip_invalid: bool) -> Result<Self, DataError> {
        let name = location.to_string();
        let raw: Box<dyn Read + Send> = match storage::open_read(location) {
            Ok(r) => r,
            Err(storage::StorageError::Io { source, .. }) => {
                return Err(DataError::Io { path: name, source })
            }
            Err(e) => return Err(e.into()),
        };
        let lines: Box<dyn BufRead + Send> = if location.is_gzip() {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(raw),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, raw))
        };
        Ok(Self {
            path: name,
            gzip: location.is_gzip(),
            lines,
            pending_header: None,
            record_no: 0,
            skip_invalid,
            skipped: 0,
            line_buf: String::new(),
        })
    }

    /// Records skipped as invalid so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn read_line(&mut self) -> Result<Option<String>, DataError> {
        self.line_buf.clear();
        let gzip = self.gzip;
        let n = self
            .lines
            .read_line(&mut self.line_buf)
            .map_err(|e| DataError::Io {
                path: self.path.clone(),
                source: if gzip && !e.get_ref().is_some_and(|i| i.is::<storage::StorageError>()) {
                    // The decoder's own errors: the compressed stream is cut short or damaged.
                    std::io::Error::new(e.kind(), format!("{e}: truncated or corrupt gzip data"))
                } else {
                    e
                },
            })?;
        Ok((n > 0).then(|| self.line_buf.trim_end().to_string()))
    }

    /// The next valid record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, DataError> {
        loop {
            let header = match self.pending_header.take() {
                Some(h) => h,
                None => 'header: loop {
                    match self.read_line()? {
                        None => return Ok(None),
                        Some(l) if l.trim().is_empty() => continue,
                        Some(l) if l.starts_with('>') => break l,
                        Some(_) if self.skip_invalid => {
                            // A record without its header: drop its lines up to the next header.
                            self.record_no += 1;
                            self.skipped += 1;
                            loop {
                                match self.read_line()? {
                                    None => return Ok(None),
                                    Some(l) if l.starts_with('>') => break 'header l,
                                    Some(_) => {}
                                }
                            }
                        }
                        Some(l) => {
                            return Err(DataError::BadRecord {
                                path: self.path.clone(),
                                record: self.record_no + 1,
                                id: String::new(),
                                reason: format!(
                                    "expected a '>' header line, found '{}'",
                                    truncate(&l)
                                ),
                            })
                        }
                    }
                },
            };
            self.record_no += 1;
            let id = header[1..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            let mut raw = String::new();
            loop {
                match self.read_line()? {
                    None => break,
                    Some(l) if l.starts_with('>') => {
                        self.pending_header = Some(l);
                        break;
                    }
                    Some(l) => raw.push_str(&l),
                }
            }
            match clean_sequence(&raw) {
                Ok(sequence) => return Ok(Some(Record { id, sequence })),
                Err(_) if self.skip_invalid => {
                    self.skipped += 1;
                }
                Err(e) => {
                    return Err(DataError::BadRecord {
                        path: self.path.clone(),
                        record: self.record_no,
                        id,
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Reads up to `limit` records of a file into memory.
pub fn read_fasta(path: &Path, limit: usize, skip_invalid: bool) -> Result<Vec<Record>, DataError> {
    read_fasta_location(&Location::from(path), limit, skip_invalid)
}

/// Reads up to `limit` records of a file or object into memory.
pub fn read_fasta_location(
    location: &Location,
    limit: usize,
    skip_invalid: bool,
) -> Result<Vec<Record>, DataError> {
    let mut reader = FastaReader::open_location(location, skip_invalid)?;
    let mut out = Vec::new();
    while out.len() < limit {
        match reader.next_record()? {
            Some(r) => out.push(r),
            None => break,
        }
    }
    Ok(out)
}

/// A random window of at most `max_len` residues (the whole sequence when it fits).
pub fn random_crop(seq: &str, max_len: usize, rng: &mut StdRng) -> String {
    if seq.len() <= max_len {
        return seq.to_string();
    }
    let start = rng.random_range(0..=seq.len() - max_len);
    seq[start..start + max_len].to_string()
}

/// Where a streaming loader stands, for exact resumption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    /// Passes over the file completed.
    pub epoch: usize,
    /// Index of the current shuffle buffer within the epoch.
    pub buffer: usize,
    /// Batches of the current buffer already handed out.
    pub batch_in_buffer: usize,
}

/// Streams token-budget batches of cropped sequences from a FASTA file or object,
/// deterministically from a seed: length-bucketed within a shuffle buffer, buffer batches in
/// random order.
pub struct BatchStream {
    location: Location,
    reader: FastaReader,
    seed: u64,
    buffer_size: usize,
    max_len: usize,
    max_tokens: usize,
    position: DataPosition,
    batches: Vec<Vec<String>>,
}

impl BatchStream {
    /// Opens the stream at `position` (use the default for a fresh start).
    pub fn open(
        location: &Location,
        seed: u64,
        buffer_size: usize,
        max_len: usize,
        max_tokens: usize,
        position: DataPosition,
    ) -> Result<Self, DataError> {
        let mut stream = Self {
            location: location.clone(),
            reader: FastaReader::open_location(location, true)?,
            seed,
            buffer_size,
            max_len,
            max_tokens,
            position: DataPosition {
                epoch: position.epoch,
                buffer: 0,
                batch_in_buffer: 0,
            },
            batches: Vec::new(),
        };
        // Skip whole buffers, then rebuild the current one and skip its consumed batches.
        for _ in 0..position.buffer {
            for _ in 0..buffer_size {
                if stream.reader.next_record()?.is_none() {
                    break;
                }
            }
        }
        stream.position.buffer = position.buffer;
        stream.fill()?;
        let skip = position.batch_in_buffer.min(stream.batches.len());
        stream.batches.drain(..skip);
        stream.position.batch_in_buffer = skip;
        Ok(stream)
    }

    /// The position of the next batch.
    pub fn position(&self) -> DataPosition {
        self.position
    }

    fn fill(&mut self) -> Result<(), DataError> {
        let mut records = Vec::with_capacity(self.buffer_size);
        while records.len() < self.buffer_size {
            match self.reader.next_record()? {
                Some(r) => records.push(r.sequence),
                None => break,
            }
        }
        if records.is_empty() {
            // End of file: next epoch.
            self.position.epoch += 1;
            self.position.buffer = 0;
            self.reader = FastaReader::open_location(&self.location, true)?;
            while records.len() < self.buffer_size {
                match self.reader.next_record()? {
                    Some(r) => records.push(r.sequence),
                    None => break,
                }
            }
            if records.is_empty() {
                return Ok(());
            }
        }
        let mut rng = StdRng::seed_from_u64(
            self.seed
                ^ ((self.position.epoch as u64) << 40)
                ^ (self.position.buffer as u64).wrapping_mul(0x9E37_79B9),
        );
        let cropped: Vec<String> = records
            .iter()
            .map(|s| random_crop(s, self.max_len, &mut rng))
            .collect();
        let lengths: Vec<usize> = cropped.iter().map(String::len).collect();
        let mut batches: Vec<Vec<String>> = plan_batches(&lengths, self.max_tokens)
            .into_iter()
            .map(|b| b.into_iter().map(|i| cropped[i].clone()).collect())
            .collect();
        // Fisher-Yates with the buffer's RNG.
        for i in (1..batches.len()).rev() {
            let j = rng.random_range(0..=i);
            batches.swap(i, j);
        }
        self.batches = batches;
        self.position.batch_in_buffer = 0;
        Ok(())
    }

    /// The next batch of sequences.
    pub fn next_batch(&mut self) -> Result<Vec<String>, DataError> {
        if self.batches.is_empty() {
            self.position.buffer += 1;
            self.fill()?;
        }
        if self.batches.is_empty() {
            return Err(DataError::BadRecord {
                path: self.location.to_string(),
                record: 0,
                id: String::new(),
                reason: "no valid sequences".into(),
            });
        }
        self.position.batch_in_buffer += 1;
        Ok(self.batches.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if name.ends_with(".gz") {
            let f = File::create(&p).unwrap();
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            gz.write_all(text.as_bytes()).unwrap();
            gz.finish().unwrap();
        } else {
            std::fs::write(&p, text).unwrap();
        }
        p
    }

    #[test]
    fn reads_multiline_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.fasta", "a.fasta.gz"] {
            let p = write(dir.path(), name, ">p1 desc\nMKT\nayi\n\n>p2\nGG\n");
            let recs = read_fasta(&p, 10, false).unwrap();
            assert_eq!(recs.len(), 2);
            assert_eq!(recs[0].id, "p1");
            assert_eq!(recs[0].sequence, "MKTAYI");
            assert_eq!(recs[1].sequence, "GG");
        }
    }

    #[test]
    fn bad_record_names_file_and_record_or_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "b.fasta", ">ok\nMKT\n>bad\nMK1T\n>ok2\nAA\n");
        let err = read_fasta(&p, 10, false).unwrap_err().to_string();
        assert!(
            err.contains("b.fasta") && err.contains("record 2") && err.contains("'bad'"),
            "{err}"
        );
        assert!(err.contains("'1'"), "{err}");
        let mut r = FastaReader::open(&p, true).unwrap();
        let mut n = 0;
        while r.next_record().unwrap().is_some() {
            n += 1;
        }
        assert_eq!((n, r.skipped()), (2, 1));
        let p = write(dir.path(), "c.fasta", "MKT\nAAA\n>p2\nGG\n");
        assert!(read_fasta(&p, 10, false)
            .unwrap_err()
            .to_string()
            .contains("header"));
        // A leading record without its header (as in MCAPS' fly file) is skipped as one record.
        let mut r = FastaReader::open(&p, true).unwrap();
        let first = r.next_record().unwrap().unwrap();
        assert_eq!((first.id.as_str(), first.sequence.as_str()), ("p2", "GG"));
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.skipped(), 1);
        let missing = read_fasta(&dir.path().join("nope.fa"), 1, false)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.fa"), "{missing}");
    }

    #[test]
    fn stream_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..57 {
            text.push_str(&format!(
                ">s{i}\n{}\n",
                "ACDEFGHIKLMNPQRSTVWY".repeat(1 + i % 5)
            ));
        }
        let p = write(dir.path(), "d.fasta", &text);
        let mut full =
            BatchStream::open(&p.clone().into(), 7, 10, 64, 200, DataPosition::default()).unwrap();
        let mut seen = Vec::new();
        let mut positions = Vec::new();
        for _ in 0..40 {
            positions.push(full.position());
            seen.push(full.next_batch().unwrap());
        }
        for k in [0, 3, 17, 33] {
            let mut resumed =
                BatchStream::open(&p.clone().into(), 7, 10, 64, 200, positions[k]).unwrap();
            for expected in &seen[k..k + 5] {
                assert_eq!(&resumed.next_batch().unwrap(), expected);
            }
        }
        assert!(seen.iter().all(|b| b.iter().all(|s| s.len() <= 64)));
    }
}
