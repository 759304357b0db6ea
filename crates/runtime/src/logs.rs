//! Container logs: a JSON-lines file per container, written by a logging process that
//! containerd's shim starts for each container (the `binary://` log URI), read back with
//! since/tail/follow.
//!
//! Why a logging process rather than FIFOs read by the agent: the shim owns it, so logs keep
//! flowing (and containers never block on a full pipe) while the agent restarts. Each record is
//! `{"t":UNIX_NANOS,"s":"out"|"err","l":"line"}`; lines are split on `\n`, longer ones are cut
//! every 16 KiB, and a final line without a newline is kept.
//!
//! A log file is capped at [`MAX_LOG_FILE`] (10 MiB): when the next record would take it past
//! that, it is renamed `<log>.1` (replacing the previous one) and a new `<log>` begins, so a
//! container's logs take at most about 20 MiB of disk. Reading covers both files.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    #[serde(rename = "out")]
    Stdout,
    /// Standard error.
    #[serde(rename = "err")]
    Stderr,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the logging process read it.
    pub time: SystemTime,
    /// Which stream.
    pub stream: Stream,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub line: String,
}

#[derive(Serialize, Deserialize)]
struct Record {
    t: u128,
    s: Stream,
    l: String,
}

impl LogLine {
    fn to_record(&self) -> Record {
        let t = self.time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        Record { t, s: self.stream, l: self.line.clone() }
    }

    fn from_record(record: Record) -> Self {
        let nanos = u64::try_from(record.t).unwrap_or(u64::MAX);
        Self { time: UNIX_EPOCH + Duration::from_nanos(nanos), stream: record.s, line: record.l }
    }
}

/// Appends `line` to a log file (tests write logs with it).
#[cfg(test)]
fn append(file: &mut impl Write, line: &LogLine) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(&line.to_record()).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    file.write_all(&bytes)
}

/// The largest a log file grows before it is rotated to `<log>.1`.
pub const MAX_LOG_FILE: u64 = 10 << 20;

/// Where a log's older part goes when it is rotated: `<log>.1`.
pub(crate) fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    path.with_file_name(name)
}

/// A log file that rotates to `<log>.1` instead of growing past its limit.
struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

impl RotatingLog {
    fn open(path: &Path, limit: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), file, size, limit })
    }

    fn append(&mut self, line: &LogLine) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(&line.to_record()).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if self.size > 0 && self.size + bytes.len() as u64 > self.limit {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Renames the file to `<log>.1` and starts a new one. A reader that follows the log sees
    /// the inode change and finishes the old file under its new name first.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Opens `path`, or gives `None` when it does not exist.
fn open_optional(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// A container's log read with `since` and `tail`, across `<log>.1` and `<log>`: the lines, and
/// a [`Follower`] placed after them.
pub(crate) fn read_log(
    path: &Path,
    since: Option<SystemTime>,
    tail: Option<usize>,
) -> std::io::Result<(Vec<LogLine>, Follower)> {
    let (mut lines, ino, end) = match open_optional(path)? {
        Some(mut file) => {
            let meta = file.metadata()?;
            let (lines, end) = match tail {
                Some(tail) => tail_of(&mut file, meta.len(), tail, since)?,
                None => {
                    let (lines, end) = records_from(&mut file, 0)?;
                    (select(lines, since, None), end)
                }
            };
            (lines, meta.ino(), end)
        }
        None => (Vec::new(), 0, 0),
    };
    let wanted = tail.map_or(usize::MAX, |tail| tail.saturating_sub(lines.len()));
    if wanted > 0 {
        let older = rotated(path);
        if let Some(mut file) = open_optional(&older)? {
            let meta = file.metadata()?;
            // Rotated while we read: then `older` is the file just read, not one before it.
            if meta.ino() != ino {
                let (older, _) = match tail {
                    Some(_) => tail_of(&mut file, meta.len(), wanted, since)?,
                    None => {
                        let (lines, end) = records_from(&mut file, 0)?;
                        (select(lines, since, None), end)
                    }
                };
                lines.splice(0..0, older);
            }
        }
    }
    Ok((lines, Follower { path: path.to_owned(), ino, offset: end }))
}

/// Reads what is appended to a log after a point, across rotations.
#[derive(Debug, Clone)]
pub(crate) struct Follower {
    path: PathBuf,
    /// The inode of the file `offset` is in (0: none yet).
    ino: u64,
    offset: u64,
}

impl Follower {
    /// The complete records written since the last call (none if the log cannot be read).
    pub(crate) fn next_lines(&mut self) -> Vec<LogLine> {
        let mut lines = Vec::new();
        let Ok(Some(mut file)) = open_optional(&self.path) else { return lines };
        let Ok(meta) = file.metadata() else { return lines };
        if meta.ino() != self.ino {
            // Rotated since the last read: finish the old file, now `<log>.1`, then start anew.
            if let Ok(Some(mut old)) = open_optional(&rotated(&self.path))
                && old.metadata().is_ok_and(|m| m.ino() == self.ino)
                && let Ok((rest, _)) = records_from(&mut old, self.offset)
            {
                lines.extend(rest);
            }
            self.ino = meta.ino();
            self.offset = 0;
        }
        if let Ok((more, next)) = records_from(&mut file, self.offset) {
            lines.extend(more);
            self.offset = next;
        }
        lines
    }
}

/// Reads the complete records of `path` from byte `offset`; returns them and the offset after
/// the last complete record (a record still being written is left for the next read).
#[cfg(test)]
pub(crate) fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<LogLine>, u64)> {
    match open_optional(path)? {
        Some(mut file) => records_from(&mut file, offset),
        None => Ok((Vec::new(), offset)),
    }
}

/// [`read_from`] on an open file.
fn records_from(file: &mut File, offset: u64) -> std::io::Result<(Vec<LogLine>, u64)> {
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut lines = Vec::new();
    let mut consumed = 0;
    for chunk in bytes.split_inclusive(|b| *b == b'\n') {
        if chunk.last() != Some(&b'\n') {
            break;
        }
        consumed += chunk.len();
        // A record that does not parse (a torn write after a crash) is skipped, not fatal.
        if let Ok(record) = serde_json::from_slice::<Record>(chunk) {
            lines.push(LogLine::from_record(record));
        }
    }
    Ok((lines, offset + consumed as u64))
}

/// How much of a log [`read_tail`] reads at a time, going backwards from its end.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The last `tail` complete records of a log of `len` bytes that are not older than `since`,
/// found by reading backwards from the end in chunks (so the cost follows `tail`, not the size
/// of the log); and the offset after the last complete record, where following it continues.
/// Going backwards stops at the first record older than `since`: records are in the order the
/// logging process read them, so their times only go backwards by the microseconds between its
/// two readers.
fn tail_of(
    file: &mut (impl Read + Seek),
    len: u64,
    tail: usize,
    since: Option<SystemTime>,
) -> std::io::Result<(Vec<LogLine>, u64)> {
    let mut newest_first = Vec::new();
    // `buf` holds the bytes from `pos` up to the records already taken (or, before `end` is
    // known, up to the end of the file).
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    let mut end = None;
    loop {
        if let Some(end) = end
            && newest_first.len() >= tail
        {
            newest_first.reverse();
            return Ok((newest_first, end));
        }
        if end.is_none() {
            if let Some(last) = buf.iter().rposition(|b| *b == b'\n') {
                // Bytes after the last newline are a record still being written: not ours yet.
                buf.truncate(last + 1);
                end = Some(pos + buf.len() as u64);
                continue;
            }
        } else if let Some(start) = record_start(&buf, pos) {
            // A record that does not parse (a torn write after a crash) is skipped, not fatal.
            if let Ok(record) = serde_json::from_slice::<Record>(&buf[start..]) {
                let line = LogLine::from_record(record);
                if since.is_some_and(|since| line.time < since) {
                    buf.clear();
                    pos = 0;
                    continue;
                }
                newest_first.push(line);
            }
            buf.truncate(start);
            continue;
        }
        if pos == 0 {
            // Nothing before: either no complete record at all, or every record is taken.
            newest_first.reverse();
            return Ok((newest_first, end.unwrap_or_default()));
        }
        let start = pos.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; usize::try_from(pos - start).unwrap_or_default()];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.append(&mut buf);
        buf = chunk;
        pos = start;
    }
}

/// Where the last record in `buf` (which ends with a newline) starts, if `buf` holds all of it:
/// after the newline before it, or at 0 when `buf` starts the file (`pos` 0).
fn record_start(buf: &[u8], pos: u64) -> Option<usize> {
    let body = buf.strip_suffix(b"\n")?;
    body.iter().rposition(|b| *b == b'\n').map(|i| i + 1).or((pos == 0).then_some(0))
}

/// Applies `since` and `tail` to lines read from the start of a log.
pub(crate) fn select(lines: Vec<LogLine>, since: Option<SystemTime>, tail: Option<usize>) -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = match since {
        Some(since) => lines.into_iter().filter(|l| l.time >= since).collect(),
        None => lines,
    };
    if let Some(tail) = tail {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    lines
}

/// Where the logging process writes, parsed from its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverArgs {
    /// The JSON-lines log file.
    pub path: PathBuf,
}

impl DriverArgs {
    /// Parses the arguments the shim passes: the log URI's query as `key value` pairs, in any
    /// order (`binary:///path/to/logger?path=/var/…/log.jsonl` gives `path /var/…/log.jsonl`).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let args: Vec<String> = args.into_iter().collect();
        let mut path = None;
        for pair in args.chunks(2) {
            match pair {
                [key, value] if key == "path" => path = Some(PathBuf::from(value)),
                [key, _] => return Err(format!("unknown argument {key:?} (expected: path FILE)")),
                [lone] => return Err(format!("argument {lone:?} has no value (expected: path FILE)")),
                _ => {}
            }
        }
        path.map(|path| Self { path }).ok_or_else(|| "missing argument: path FILE".to_owned())
    }
}

/// The logging process's work, as containerd's shim runs it: the container's stdout is fd 3,
/// its stderr fd 4, and closing fd 5 tells the shim the logger is ready. Returns when both
/// streams reach end of file (the container exited).
///
/// # Safety
///
/// Call only in a process started by the shim's `binary://` log URI (or a test that set up the
/// same descriptors): it takes ownership of file descriptors 3, 4 and 5.
pub unsafe fn run_driver(args: &DriverArgs) -> std::io::Result<()> {
    use std::os::fd::FromRawFd as _;
    if let Some(dir) = args.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = RotatingLog::open(&args.path, MAX_LOG_FILE)?;
    // SAFETY: the caller guarantees fds 3, 4 and 5 are the shim's pipes and owned by no one else.
    let (stdout, stderr, ready) = unsafe { (File::from_raw_fd(3), File::from_raw_fd(4), File::from_raw_fd(5)) };
    drop(ready);
    drive(stdout, stderr, out)
}

/// Copies `stdout` and `stderr` into `out` until both end.
fn drive(stdout: File, stderr: File, mut out: RotatingLog) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<LogLine>();
    let readers: Vec<_> = [(stdout, Stream::Stdout), (stderr, Stream::Stderr)]
        .into_iter()
        .map(|(pipe, stream)| {
            let tx = tx.clone();
            std::thread::spawn(move || forward(pipe, stream, &tx))
        })
        .collect();
    drop(tx);
    // A write that fails (a full disk) loses lines but must not stop the draining: were this
    // process to exit, the container would get EPIPE, or block, on its next write.
    let mut first_error = None;
    for line in rx {
        if let Err(err) = out.append(&line) {
            first_error.get_or_insert(err);
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    match first_error {
        Some(err) => Err(err),
        None => out.file.sync_data(),
    }
}

/// Output without a newline is cut into lines of at most this many bytes (as Docker does), so
/// a container cannot make the logging process hold an unbounded line in memory.
const MAX_LINE: usize = 16 * 1024;

fn forward(pipe: File, stream: Stream, tx: &mpsc::Sender<LogLine>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    // Whether the last line was cut at MAX_LINE: a newline right after it ends that line.
    let mut cut = false;
    loop {
        buf.clear();
        match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let was_cut = std::mem::replace(&mut cut, buf.last() != Some(&b'\n'));
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if was_cut && buf.is_empty() {
                        continue;
                    }
                }
                let line =
                    LogLine { time: SystemTime::now(), stream, line: String::from_utf8_lossy(&buf).into_owned() };
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(secs: u64, stream: Stream, text: &str) -> LogLine {
        LogLine { time: UNIX_EPOCH + Duration::from_secs(secs), stream, line: text.to_owned() }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = std::env::temp_dir().join(format!("shoal-runtime-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("log.jsonl");
        let mut file = File::create(&path).expect("create");
        let written = [line(1, Stream::Stdout, "hello"), line(2, Stream::Stderr, "wörld \"quoted\"")];
        for l in &written {
            append(&mut file, l).expect("append");
        }
        file.write_all(br#"{"t":3,"s":"out","l":"half"#).expect("torn write");
        let (read, offset) = read_from(&path, 0).expect("read");
        assert_eq!(read, written);
        // Finishing the torn record makes it readable from the returned offset.
        file.write_all(b"\"}\n").expect("finish");
        let (rest, _) = read_from(&path, offset).expect("read rest");
        assert_eq!(
            rest,
            vec![LogLine { time: UNIX_EPOCH + Duration::from_nanos(3), stream: Stream::Stdout, line: "half".into() }]
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A reader that counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    /// `tail_of` over `bytes`: the lines' texts, the end offset and how many bytes it read.
    fn tail_texts(bytes: &[u8], tail: usize, since: Option<u64>) -> (Vec<String>, u64, u64) {
        let mut reader = Counting { inner: std::io::Cursor::new(bytes), read: 0 };
        let since = since.map(|s| UNIX_EPOCH + Duration::from_secs(s));
        let (lines, end) = tail_of(&mut reader, bytes.len() as u64, tail, since).expect("tail");
        (lines.into_iter().map(|l| l.line).collect(), end, reader.read)
    }

    fn log_of(lines: impl IntoIterator<Item = LogLine>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for l in lines {
            append(&mut bytes, &l).expect("append");
        }
        bytes
    }

    #[test]
    fn tail_reads_backwards_from_the_end() {
        // About 4 MiB of log: the last lines come from its last chunk, not from reading it all.
        let big = log_of((1..=100_000).map(|s| line(s, Stream::Stdout, &format!("{s:040}"))));
        let (texts, end, read) = tail_texts(&big, 2, None);
        assert_eq!(texts, [format!("{:040}", 99_999), format!("{:040}", 100_000)]);
        assert_eq!(end, big.len() as u64);
        assert!(read <= TAIL_CHUNK, "read {read} bytes of {} for two lines", big.len());

        // Every line, through many chunks, is the same as reading forwards.
        let (texts, _, _) = tail_texts(&big, usize::MAX, None);
        assert_eq!(texts.len(), 100_000);
        assert_eq!(texts.first().map(String::as_str), Some(format!("{:040}", 1).as_str()));
        // `since` stops going backwards at the first older record.
        let (texts, _, read) = tail_texts(&big, 1000, Some(99_998));
        assert_eq!(texts.len(), 3);
        assert!(read <= TAIL_CHUNK, "{read}");
    }

    #[test]
    fn tail_edges() {
        let five = log_of((1..=5).map(|s| line(s, Stream::Stdout, &s.to_string())));
        let torn = [five.as_slice(), br#"{"t":6,"s":"out","l":"ha"#].concat();
        let junk = [br#"not json"#.as_slice(), b"\n", &five].concat();
        for (name, bytes, tail, since, expected, end) in [
            ("empty", &b""[..], 3, None, vec![], 0),
            ("only torn", &br#"{"t":1,"#[..], 3, None, vec![], 0),
            ("tail 0", &five[..], 0, None, vec![], five.len()),
            ("tail 2", &five[..], 2, None, vec!["4", "5"], five.len()),
            ("more than there is", &five[..], 9, None, vec!["1", "2", "3", "4", "5"], five.len()),
            ("torn last record", &torn[..], 2, None, vec!["4", "5"], five.len()),
            ("since", &five[..], 9, Some(4), vec!["4", "5"], five.len()),
            ("since after all", &five[..], 9, Some(9), vec![], five.len()),
            ("junk skipped", &junk[..], 9, None, vec!["1", "2", "3", "4", "5"], junk.len()),
        ] {
            let (texts, got_end, _) = tail_texts(bytes, tail, since);
            assert_eq!((texts, got_end), (expected.iter().map(|s| (*s).to_owned()).collect(), end as u64), "{name}");
        }
    }

    #[test]
    fn since_and_tail() {
        let lines: Vec<LogLine> = (1..=5).map(|s| line(s, Stream::Stdout, &s.to_string())).collect();
        let texts = |ls: Vec<LogLine>| ls.into_iter().map(|l| l.line).collect::<Vec<_>>();
        assert_eq!(texts(select(lines.clone(), None, Some(2))), ["4", "5"]);
        assert_eq!(texts(select(lines.clone(), Some(UNIX_EPOCH + Duration::from_secs(3)), None)), ["3", "4", "5"]);
        assert_eq!(texts(select(lines.clone(), Some(UNIX_EPOCH + Duration::from_secs(2)), Some(1))), ["5"]);
        assert_eq!(texts(select(lines, None, Some(0))), Vec::<String>::new());
    }

    #[test]
    fn long_output_is_cut_into_bounded_lines() {
        let dir = std::env::temp_dir().join(format!("shoal-runtime-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("out");
        let long = "x".repeat(MAX_LINE * 2 + 10);
        let exact = "y".repeat(MAX_LINE);
        std::fs::write(&path, format!("{long}\nshort\n{exact}\n\nend")).expect("write");
        let (tx, rx) = mpsc::channel();
        forward(File::open(&path).expect("open"), Stream::Stdout, &tx);
        drop(tx);
        let lengths: Vec<usize> = rx.into_iter().map(|l| l.line.len()).collect();
        std::fs::remove_dir_all(&dir).expect("cleanup");
        // A line of exactly MAX_LINE bytes stays one line; a real empty line after it stays too.
        assert_eq!(lengths, [MAX_LINE, MAX_LINE, 10, 5, MAX_LINE, 0, 3]);
    }

    /// A directory for one test, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("shoal-runtime-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn texts(lines: Vec<LogLine>) -> Vec<String> {
        lines.into_iter().map(|l| l.line).collect()
    }

    #[test]
    fn the_logger_rotates_and_reading_spans_both_files() {
        let dir = TempDir::new("rotate");
        let (out, err, log) = (dir.0.join("out"), dir.0.join("err"), dir.0.join("log.jsonl"));
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i:04}")).collect();
        std::fs::write(&out, lines.join("\n") + "\n").expect("write stdout");
        std::fs::write(&err, "").expect("write stderr");
        // Each record is about 60 bytes: a 20 KiB cap rotates three times for 1000 lines.
        let limit = 20 * 1024;
        let open = |p: &Path| File::open(p).expect("open");
        drive(open(&out), open(&err), RotatingLog::open(&log, limit).expect("open log")).expect("drive");

        let size = |p: &Path| std::fs::metadata(p).expect("stat").len();
        assert!(size(&log) <= limit && size(&rotated(&log)) <= limit, "the cap holds for both files");
        assert!(size(&log) + size(&rotated(&log)) < 1000 * 50, "older lines were dropped by rotation");
        let current = read_from(&log, 0).expect("read").0.len();
        assert!(current > 0 && current < 1000, "{current}");

        // A tail longer than the current file continues into the rotated one, in order.
        let want = current + 10;
        let (tail, _) = read_log(&log, None, Some(want)).expect("tail");
        assert_eq!(texts(tail), lines[1000 - want..]);
        // Everything that is kept, when no tail is asked for, is the end of the output, in order.
        let (all, _) = read_log(&log, None, None).expect("all");
        let all = texts(all);
        assert!(all.len() > current);
        assert_eq!(all, lines[1000 - all.len()..]);
    }

    #[test]
    fn following_a_log_crosses_a_rotation() {
        let dir = TempDir::new("follow");
        let log = dir.0.join("log.jsonl");
        let mut writer = RotatingLog::open(&log, 400).expect("open");
        let write = |writer: &mut RotatingLog, range: std::ops::Range<u64>| {
            for i in range {
                writer.append(&line(i, Stream::Stdout, &format!("n{i}"))).expect("append");
            }
        };
        write(&mut writer, 0..3);
        let (first, mut follower) = read_log(&log, None, Some(2)).expect("read");
        assert_eq!(texts(first), ["n1", "n2"]);
        // Enough to rotate once (about 40 bytes a record, 400 a file): nothing is lost or repeated.
        write(&mut writer, 3..15);
        assert!(rotated(&log).exists());
        assert_eq!(texts(follower.next_lines()), (3..15).map(|i| format!("n{i}")).collect::<Vec<_>>());
        write(&mut writer, 15..16);
        assert_eq!(texts(follower.next_lines()), ["n15"]);
        assert_eq!(texts(follower.next_lines()), Vec::<String>::new());
    }

    #[test]
    fn driver_arguments() {
        let args = |a: &[&str]| DriverArgs::parse(a.iter().map(|s| (*s).to_owned()));
        assert_eq!(args(&["path", "/x/log"]), Ok(DriverArgs { path: "/x/log".into() }));
        assert_eq!(args(&[]), Err("missing argument: path FILE".to_owned()));
        assert_eq!(args(&["colour", "red"]), Err("unknown argument \"colour\" (expected: path FILE)".to_owned()));
        assert_eq!(args(&["path"]), Err("argument \"path\" has no value (expected: path FILE)".to_owned()));
    }
}
