//! Fake clocks with libfaketime (apt: `libfaketime`), for the clock tests:
//! a Postgres server whose clock runs ahead or behind ([`server_env`],
//! used by [`crate::PostgresOptions`]), and this exporter's own binary with
//! a wall clock a test can step while it runs ([`SteppableClock`]) or with a
//! fixed offset ([`exporter_env`]).
//!
//! What works (verified on Debian 12, libfaketime 0.9.10): `libfaketime.so.1`
//! with `FAKETIME="+60s"` on `pg_ctl` (its children inherit it); the
//! multi-threaded `libfaketimeMT.so.1` on the exporter, with
//! `FAKETIME_DONT_FAKE_MONOTONIC=1` so only the wall clock moves (an NTP
//! step), and `FAKETIME_TIMESTAMP_FILE` + `FAKETIME_NO_CACHE=1` to step it
//! by rewriting the file. It does *not* work on `redis-server` (the server
//! never listens), so Redis clocks cannot be faked here.

use std::io;
use std::path::{Path, PathBuf};

use crate::{LabError, LabResult};

/// The directory holding `libfaketime.so.1` and `libfaketimeMT.so.1`:
/// `RPO_LAB_FAKETIME_DIR`, else `/usr/lib/<multiarch>/faketime`, else
/// `/usr/lib/faketime` (the same places `scripts/install-deps.sh` checks).
pub fn library_dir() -> LabResult<PathBuf> {
    let has_libraries = |dir: &Path| dir.join("libfaketimeMT.so.1").is_file();
    if let Some(dir) = std::env::var_os("RPO_LAB_FAKETIME_DIR") {
        let dir = PathBuf::from(dir);
        return if has_libraries(&dir) {
            Ok(dir)
        } else {
            Err(not_installed(format!(
                "RPO_LAB_FAKETIME_DIR={} has no libfaketimeMT.so.1",
                dir.display()
            )))
        };
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("faketime"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.push(PathBuf::from("/usr/lib/faketime"));
    candidates
        .into_iter()
        .find(|dir| has_libraries(dir))
        .ok_or_else(|| not_installed("no /usr/lib/*/faketime/libfaketimeMT.so.1".to_string()))
}

fn not_installed(what: String) -> LabError {
    LabError::Io {
        context: format!("libfaketime is not installed ({what}): run scripts/install-deps.sh"),
        source: io::Error::from(io::ErrorKind::NotFound),
    }
}

/// The environment that runs a server (and its children) with its clock
/// `offset` away from the real one: `"+60s"`, `"-60s"` (libfaketime's
/// relative `FAKETIME` syntax).
pub fn server_env(offset: &str) -> LabResult<Vec<(String, String)>> {
    let lib = library_dir()?.join("libfaketime.so.1");
    Ok(vec![
        ("LD_PRELOAD".to_string(), lib.display().to_string()),
        ("FAKETIME".to_string(), offset.to_string()),
        ("FAKETIME_DONT_RESET".to_string(), "1".to_string()),
    ])
}

/// The environment that runs the exporter with its wall clock a fixed
/// `offset` away (`"+3600s"`) and its monotonic clock real.
pub fn exporter_env(offset: &str) -> LabResult<Vec<(String, String)>> {
    Ok(vec![
        ("LD_PRELOAD".to_string(), mt_library()?),
        ("FAKETIME".to_string(), offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
    ])
}

fn mt_library() -> LabResult<String> {
    Ok(library_dir()?
        .join("libfaketimeMT.so.1")
        .display()
        .to_string())
}

/// A wall clock a test steps while the process runs, as NTP would: the
/// process reads the offset from a file on every call (`FAKETIME_NO_CACHE`),
/// its monotonic clock stays real. Starts at `+0`; the file lives in a temp
/// dir removed on drop.
#[derive(Debug)]
pub struct SteppableClock {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl SteppableClock {
    pub fn new() -> LabResult<SteppableClock> {
        let dir = tempfile::Builder::new()
            .prefix("rpo-lab-clock-")
            .tempdir()
            .map_err(|e| LabError::Io {
                context: "create a temp dir for the fake clock".to_string(),
                source: e,
            })?;
        let clock = SteppableClock {
            file: dir.path().join("faketime"),
            _dir: dir,
        };
        clock.set_offset(0)?;
        Ok(clock)
    }

    /// The environment of the process whose clock this is.
    pub fn env(&self) -> LabResult<Vec<(String, String)>> {
        Ok(vec![
            ("LD_PRELOAD".to_string(), mt_library()?),
            (
                "FAKETIME_TIMESTAMP_FILE".to_string(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".to_string(), "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
        ])
    }

    /// Steps the wall clock to `seconds` away from the real one.
    pub fn set_offset(&self, seconds: i64) -> LabResult<()> {
        // Written whole then renamed, so a reader never sees half a line.
        let partial = self.file.with_extension("partial");
        std::fs::write(&partial, format!("{seconds:+}\n"))
            .and_then(|()| std::fs::rename(&partial, &self.file))
            .map_err(|e| LabError::Io {
                context: format!("write {}", self.file.display()),
                source: e,
            })
    }
}
