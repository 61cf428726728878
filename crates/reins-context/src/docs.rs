//! The docs folder: which files are documents, and reading one.

use crate::ContextError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Files bigger than this are skipped: they are generated dumps or logs far
/// more often than prose anyone wants quoted, and one would swamp the index.
pub const MAX_DOCUMENT_BYTES: u64 = 8 * 1024 * 1024;

/// Extensions (lower-cased) of the files that are documents.
pub const DOCUMENT_EXTENSIONS: &[&str] = &["md", "markdown", "txt"];

/// Every indexable file under `dir` (*.md, *.markdown, *.txt; recursive; hidden entries skipped; files over 8 MiB skipped with a tracing::warn naming the file), as (relative path, absolute path), sorted.
///
/// Symlinked files are followed; symlinked folders are not (they can loop).
/// A subfolder that cannot be read is skipped with a warning rather than
/// failing the whole listing: one bad permission must not empty the index.
pub fn list_documents(dir: &Path) -> Result<Vec<(String, PathBuf)>, ContextError> {
    let mut out = Vec::new();
    walk(dir, dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), ContextError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) if dir == root => {
            return Err(ContextError::DocsFolder {
                path: root.display().to_string(),
                source,
            });
        }
        Err(e) => {
            tracing::warn!(folder = %dir.display(), error = %e, "docs subfolder skipped: cannot be read");
            return Ok(());
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %e, "docs folder entry skipped");
                continue;
            }
        };
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(file = %path.display(), "skipped: its name is not UTF-8, so it cannot be cited");
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            walk(root, &path, &rel, out)?;
            continue;
        }
        if !has_document_extension(name) {
            continue;
        }
        // Follows a symlink, so a linked file counts by its target's size.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_DOCUMENT_BYTES {
            tracing::warn!(file = %rel, bytes = meta.len(), "document skipped: larger than 8 MiB");
            continue;
        }
        out.push((rel, path));
    }
    Ok(())
}

fn has_document_extension(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && DOCUMENT_EXTENSIONS
                .iter()
                .any(|e| e.eq_ignore_ascii_case(ext))
    })
}

/// Whether a path relative to the docs folder ('/' separators) names a
/// document: a document extension and no hidden component.
pub(crate) fn is_document_path(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.split('/').any(|c| c.is_empty() || c.starts_with('.'))
        && rel.rsplit('/').next().is_some_and(has_document_extension)
}

/// A document's text and content hash.
pub(crate) struct Document {
    pub text: String,
    pub hash: String,
}

/// Reads a document; `None` when it is gone, is not a regular file, or is
/// over the size limit (warned), i.e. whenever it should not be indexed.
pub(crate) fn read_document(rel: &str, abs: &Path) -> Result<Option<Document>, ContextError> {
    let meta = match std::fs::metadata(abs) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ContextError::ReadDocument {
                path: abs.display().to_string(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_DOCUMENT_BYTES {
        tracing::warn!(file = %rel, bytes = meta.len(), "document skipped: larger than 8 MiB");
        return Ok(None);
    }
    let bytes = match std::fs::read(abs) {
        Ok(bytes) => bytes,
        // Deleted between the two calls.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ContextError::ReadDocument {
                path: abs.display().to_string(),
                source,
            });
        }
    };
    let hash = hex::encode(Sha256::digest(&bytes));
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(file = %rel, "document is not valid UTF-8: invalid bytes replaced");
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    Ok(Some(Document { text, hash }))
}

/// `path` (absolute, or relative to `docs`) as a '/'-separated path relative
/// to `docs`. `docs_canonical` lets paths reported through a symlinked or
/// relative docs path resolve too.
pub(crate) fn relative_to(
    docs: &Path,
    docs_canonical: Option<&Path>,
    path: &Path,
) -> Result<String, ContextError> {
    let outside = || ContextError::OutsideDocs {
        path: path.display().to_string(),
        docs: docs.display().to_string(),
    };
    let rel = if path.is_absolute() {
        path.strip_prefix(docs)
            .ok()
            .or_else(|| docs_canonical.and_then(|c| path.strip_prefix(c).ok()))
            .ok_or_else(outside)?
    } else {
        path
    };
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part.to_str().ok_or_else(outside)?),
            std::path::Component::CurDir => {}
            // `..` could climb out of the folder; roots cannot occur here.
            _ => return Err(outside()),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_paths() {
        assert!(is_document_path("guide/install.md"));
        assert!(is_document_path("NOTES.TXT"));
        assert!(!is_document_path(".hidden/a.md"));
        assert!(!is_document_path("a/.b.md"));
        assert!(!is_document_path("a.rs"));
        assert!(!is_document_path(".md"));
        assert!(!is_document_path("guide"));
    }

    #[test]
    fn relative_paths() {
        let docs = Path::new("/srv/docs");
        assert_eq!(
            relative_to(docs, None, Path::new("/srv/docs/a/b.md")).ok(),
            Some("a/b.md".to_owned())
        );
        assert_eq!(
            relative_to(docs, None, Path::new("a/./b.md")).ok(),
            Some("a/b.md".to_owned())
        );
        assert!(relative_to(docs, None, Path::new("/etc/passwd")).is_err());
        assert!(relative_to(docs, None, Path::new("../x.md")).is_err());
    }
}
