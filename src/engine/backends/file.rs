//! `file://`: local files, confined to operator allow-listed root directories.
//!
//! Invariants:
//! - Every path is checked before use: it must be absolute, contain no `..` component, and
//!   resolve (symlinks followed, via its deepest existing ancestor) inside one of the roots.
//!   Anything else is EACCES "Permission denied", never a touch of the file.
//! - The copy streams through a bounded buffer, creates the destination exclusively
//!   (`O_CREAT|O_EXCL`, which also refuses a symlink planted at the final component), and
//!   fsyncs the file and its directory before reporting success.
//! - Only tokio fs operations are used, so dropping a copy (cancel, timeout) leaves nothing
//!   running beyond the one in-flight read or write.
//!
//! Known limit: the confinement check and the open are not atomic; a local user able to swap
//! a directory for a symlink between the two could escape. Roots should be owned by the
//! service account.
//!
//! URLs: `file:///abs/path` or `file://localhost/abs/path`; no percent-decoding, no query.

use std::{
    io,
    path::{Component, Path, PathBuf},
    sync::atomic::Ordering,
};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Backend, CopyParams, OpError, OpResult, Progress, Session};
use crate::engine::checksum::{self, Algorithm};

/// Copy buffer: bounded memory per transfer, large enough for sequential throughput.
const COPY_BUFFER: usize = 1024 * 1024;

/// The local file backend.
#[derive(Debug, Clone)]
pub struct FileBackend {
    roots: Vec<PathBuf>,
}

impl FileBackend {
    /// Serve only paths under `roots`. Roots are canonicalized now when they exist, so a
    /// symlinked root (e.g. `/tmp` on some systems) still matches resolved paths.
    pub fn new(roots: Vec<PathBuf>) -> FileBackend {
        let roots = roots
            .into_iter()
            .map(|r| std::fs::canonicalize(&r).unwrap_or(r))
            .collect();
        FileBackend { roots }
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn schemes(&self) -> &[&'static str] {
        &["file"]
    }

    fn session(&self, _context: &super::SessionContext) -> Box<dyn Session> {
        Box::new(FileSession {
            roots: self.roots.clone(),
        })
    }
}

/// A session: stateless apart from the roots.
pub struct FileSession {
    roots: Vec<PathBuf>,
}

fn denied(path: &str, why: &str) -> OpError {
    OpError::new(libc::EACCES, format!("Permission denied: {path} ({why})"))
}

impl FileSession {
    /// The local path of `url`, checked against the roots.
    async fn path(&self, url: &str) -> OpResult<PathBuf> {
        let rest = url
            .strip_prefix("file://")
            .or_else(|| url.strip_prefix("FILE://"))
            .ok_or_else(|| OpError::new(libc::EINVAL, format!("Not a file URL: {url}")))?;
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            return Err(OpError::new(
                libc::EINVAL,
                format!("Not an absolute file URL: {url}"),
            ));
        }
        let path = PathBuf::from(rest);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(denied(rest, "'..' is not allowed"));
        }
        let resolved = resolve(&path)
            .await
            .map_err(|e| OpError::from_io(&e, rest))?;
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            Ok(path)
        } else {
            Err(denied(rest, "outside the allowed directories"))
        }
    }
}

/// `path` with symlinks resolved: the canonical deepest existing ancestor joined with the
/// components that do not exist yet.
async fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    loop {
        match tokio::fs::canonicalize(&existing).await {
            Ok(canonical) => {
                let mut out = canonical;
                for part in missing.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(e);
                };
                missing.push(name);
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

impl FileSession {
    async fn do_copy(&self, source: &str, destination: &str, progress: &Progress) -> OpResult<()> {
        let src = self.path(source).await?;
        let dst = self.path(destination).await?;
        let mut input = tokio::fs::File::open(&src)
            .await
            .map_err(|e| OpError::from_io(&e, &display(&src)))?;
        let mut output = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst)
            .await
            .map_err(|e| OpError::from_io(&e, &display(&dst)))?;
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut done: u64 = 0;
        loop {
            let n = input
                .read(&mut buf)
                .await
                .map_err(|e| OpError::from_io(&e, &display(&src)))?;
            if n == 0 {
                break;
            }
            output
                .write_all(&buf[..n])
                .await
                .map_err(|e| OpError::from_io(&e, &display(&dst)))?;
            done += n as u64;
            progress.transferred.store(done, Ordering::Relaxed);
        }
        let sync_err = |e: io::Error| OpError::from_io(&e, &display(&dst));
        output.flush().await.map_err(sync_err)?;
        output.sync_all().await.map_err(sync_err)?;
        drop(output);
        // The new directory entry must be durable too.
        if let Some(parent) = dst.parent() {
            let dir = tokio::fs::File::open(parent).await.map_err(sync_err)?;
            dir.sync_all().await.map_err(sync_err)?;
        }
        Ok(())
    }
}

impl Session for FileSession {
    fn stat(&mut self, url: &str) -> BoxFuture<'_, OpResult<u64>> {
        let url = url.to_string();
        Box::pin(async move {
            let path = self.path(&url).await?;
            let meta = tokio::fs::metadata(&path)
                .await
                .map_err(|e| OpError::from_io(&e, &display(&path)))?;
            Ok(meta.len())
        })
    }

    fn checksum(&mut self, url: &str, algorithm: &str) -> BoxFuture<'_, OpResult<String>> {
        let url = url.to_string();
        let algorithm = algorithm.to_string();
        Box::pin(async move {
            let path = self.path(&url).await?;
            let alg = Algorithm::parse(&algorithm).ok_or_else(|| {
                OpError::new(
                    libc::ENOTSUP,
                    format!("Checksum algorithm {algorithm} not supported"),
                )
            })?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| OpError::from_io(&e, &display(&path)))?;
            checksum::of_reader(alg, file)
                .await
                .map_err(|e| OpError::from_io(&e, &display(&path)))
        })
    }

    fn exists(&mut self, url: &str) -> BoxFuture<'_, OpResult<bool>> {
        let url = url.to_string();
        Box::pin(async move {
            let path = self.path(&url).await?;
            match tokio::fs::symlink_metadata(&path).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(OpError::from_io(&e, &display(&path))),
            }
        })
    }

    fn delete(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let url = url.to_string();
        Box::pin(async move {
            let path = self.path(&url).await?;
            tokio::fs::remove_file(&path)
                .await
                .map_err(|e| OpError::from_io(&e, &display(&path)))
        })
    }

    fn make_parent(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let url = url.to_string();
        Box::pin(async move {
            let path = self.path(&url).await?;
            let Some(parent) = path.parent() else {
                return Ok(());
            };
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| OpError::from_io(&e, &display(parent)))
        })
    }

    fn copy<'a>(
        &'a mut self,
        source: &'a str,
        destination: &'a str,
        _params: &'a CopyParams,
        progress: &'a Progress,
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(self.do_copy(source, destination, progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(p: &Path) -> String {
        format!("file://{}", p.display())
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        session: Box<dyn Session>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let session = FileBackend::new(vec![root.clone()])
            .session(&super::super::SessionContext::anonymous());
        Fixture {
            _dir: dir,
            root,
            outside,
            session,
        }
    }

    #[tokio::test]
    async fn copy_creates_and_checksums() {
        let mut f = fixture();
        let data: Vec<u8> = (0..(COPY_BUFFER * 2 + 5)).map(|i| (i * 7) as u8).collect();
        let src = f.root.join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let dst = f.root.join("a/b/dst.bin");
        let (s, d) = (url(&src), url(&dst));
        assert_eq!(f.session.stat(&s).await, Ok(data.len() as u64));
        assert_eq!(f.session.exists(&d).await, Ok(false));
        f.session.make_parent(&d).await.unwrap();
        let progress = Progress::default();
        let params = CopyParams {
            filesize: data.len() as u64,
            nostreams: 1,
            ..Default::default()
        };
        f.session.copy(&s, &d, &params, &progress).await.unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert_eq!(
            progress.transferred.load(Ordering::Relaxed),
            data.len() as u64
        );
        assert_eq!(
            f.session.checksum(&d, "ADLER32").await.unwrap(),
            checksum::of_bytes(Algorithm::Adler32, &data)
        );
        assert_eq!(
            f.session.checksum(&d, "sha1").await.unwrap_err().errno,
            libc::ENOTSUP
        );
        // Copy never overwrites.
        let err = f
            .session
            .copy(&s, &d, &params, &progress)
            .await
            .unwrap_err();
        assert_eq!(err.errno, libc::EEXIST);
        f.session.delete(&d).await.unwrap();
        assert_eq!(f.session.exists(&d).await, Ok(false));
        assert_eq!(f.session.delete(&d).await.unwrap_err().errno, libc::ENOENT);
    }

    #[tokio::test]
    async fn refuses_paths_outside_roots() {
        let mut f = fixture();
        std::fs::write(f.outside.join("secret"), b"x").unwrap();
        let direct = url(&f.outside.join("secret"));
        let err = f.session.stat(&direct).await.unwrap_err();
        assert_eq!(err.errno, libc::EACCES);
        assert!(err.message.contains("Permission denied"), "{}", err.message);

        let dotdot = format!("file://{}/../outside/secret", f.root.display());
        assert_eq!(
            f.session.stat(&dotdot).await.unwrap_err().errno,
            libc::EACCES
        );

        // A symlink inside the root pointing outside, as a file and as a directory.
        std::os::unix::fs::symlink(f.outside.join("secret"), f.root.join("link")).unwrap();
        std::os::unix::fs::symlink(&f.outside, f.root.join("dirlink")).unwrap();
        let link = url(&f.root.join("link"));
        assert_eq!(f.session.stat(&link).await.unwrap_err().errno, libc::EACCES);
        assert_eq!(
            f.session.delete(&link).await.unwrap_err().errno,
            libc::EACCES
        );
        let through = url(&f.root.join("dirlink/new/file"));
        assert_eq!(
            f.session.make_parent(&through).await.unwrap_err().errno,
            libc::EACCES
        );
        assert!(!f.outside.join("new").exists());
        assert_eq!(
            f.session
                .stat("file://relative/path")
                .await
                .unwrap_err()
                .errno,
            libc::EINVAL
        );
    }
}
