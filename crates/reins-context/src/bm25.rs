//! BM25 over the docs folder, on tantivy.
//!
//! One writer behind a mutex does every change; searches take the reader's
//! current searcher and never wait for it. Which documents are indexed, with
//! the content hash each was chunked from, is the commit payload of the
//! index itself: it is written atomically with the passages it describes,
//! so a crash can never leave the two disagreeing, and a restart re-chunks
//! only what changed.

use crate::chunk::{ChunkOptions, Counter, chunk_document};
use crate::docs::{Document, is_document_path, list_documents, read_document, relative_to};
use crate::{ContextError, Hit, Passage};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{QueryParser, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError,
    Term,
};

/// The layout of the commit payload; a different one is rebuilt from the docs.
const MANIFEST_FORMAT: u32 = 1;
/// Heading words say what a whole section is about, so they count double.
const HEADING_BOOST: f32 = 2.0;

/// What the index holds, per commit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The options the passages were cut with: other options mean other
    /// passages, so a change re-chunks everything.
    max_tokens: usize,
    overlap_tokens: usize,
    generation: u64,
    docs: BTreeMap<String, DocEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DocEntry {
    /// SHA-256 of the file's bytes ("" for caller-built passages).
    hash: String,
    passages: usize,
}

/// The index's size and activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    /// Documents indexed (files, or distinct paths of caller-built passages).
    pub documents: usize,
    pub passages: u64,
    /// Commits so far, over the life of a persisted index.
    pub generation: u64,
    /// Documents chunked by this process (at open and since), so a caller can
    /// tell a change picked up one file from a rebuild.
    pub chunked: u64,
}

/// What one update did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpdateReport {
    /// The document, relative to the docs folder.
    pub path: String,
    /// Passages taken out (the document's previous ones).
    pub removed: usize,
    /// Passages put in (its new ones).
    pub added: usize,
    /// The content hash had not changed: nothing was re-chunked or committed.
    pub unchanged: bool,
}

/// What bringing the index up to date with the folder did (at open, or
/// [`Bm25Index::refresh`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshReport {
    /// Documents whose content hash matched: not re-chunked.
    pub unchanged: usize,
    /// Documents (re-)chunked: new or changed.
    pub chunked: usize,
    /// Documents gone from the folder, their passages removed.
    pub removed: usize,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    path: Field,
    heading: Field,
    text: Field,
}

/// The writer and what it has committed; one lock, so an update reads,
/// chunks and commits without another interleaving.
struct WriterState {
    writer: IndexWriter,
    manifest: Manifest,
}

type Watcher = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// A BM25 index of passages, kept in RAM or in a folder.
pub struct Bm25Index {
    fields: Fields,
    reader: IndexReader,
    parser: QueryParser,
    state: Mutex<WriterState>,
    /// The docs folder, absent for caller-built passages.
    docs: Option<PathBuf>,
    /// The same, resolved, for events reported through another spelling.
    docs_canonical: Option<PathBuf>,
    opts: ChunkOptions,
    count: Option<Counter>,
    /// Where the index lives, for error messages ("RAM" when it does not persist).
    location: String,
    opened: RefreshReport,
    documents: AtomicUsize,
    generation: AtomicU64,
    chunked: AtomicU64,
    watcher: Mutex<Option<Watcher>>,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Index")
            .field("docs", &self.docs)
            .field("location", &self.location)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("en_stem")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        path: b.add_text_field("path", STRING | STORED),
        heading: b.add_text_field("heading", text.clone()),
        text: b.add_text_field("text", text),
    };
    (b.build(), fields)
}

impl Bm25Index {
    /// Indexes every document under `docs`. With `index_dir` the index persists there and a restart re-chunks only files whose content hash changed (and removes files that are gone); without it the index lives in RAM.
    ///
    /// `count` must be the same tokenizer from run to run: the index cannot
    /// tell passages cut by another, and keeps them until their file changes
    /// (delete `index_dir` after changing the model). Blocking: reads and
    /// chunks the whole folder.
    pub fn open(
        docs: &Path,
        index_dir: Option<&Path>,
        opts: ChunkOptions,
        count: Counter,
    ) -> Result<Arc<Self>, ContextError> {
        if !docs.is_dir() {
            return Err(ContextError::DocsFolder {
                path: docs.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
            });
        }
        let (schema, fields) = schema();
        let (index, location) = match index_dir {
            Some(dir) => (open_dir(dir, schema)?, dir.display().to_string()),
            None => (Index::create_in_ram(schema), "in RAM".to_owned()),
        };
        let err = |source| index_error(&location, source);
        let writer = new_writer(&index, &location)?;
        let payload = index.load_metas().map_err(err)?.payload;
        let mut manifest = payload
            .as_deref()
            .and_then(|p| serde_json::from_str::<Manifest>(p).ok())
            .unwrap_or_default();
        let wanted = (opts.max_tokens, opts.overlap_tokens);
        let reset = manifest.format != MANIFEST_FORMAT
            || (manifest.max_tokens, manifest.overlap_tokens) != wanted;
        if reset {
            if payload.is_some() {
                tracing::info!(index = %location, "search index rebuilt: chunk options or layout changed");
            }
            writer.delete_all_documents().map_err(err)?;
            manifest = Manifest {
                format: MANIFEST_FORMAT,
                max_tokens: opts.max_tokens,
                overlap_tokens: opts.overlap_tokens,
                generation: manifest.generation,
                docs: BTreeMap::new(),
            };
        }
        let mut index = Self::assemble(
            &index,
            fields,
            WriterState { writer, manifest },
            location,
            Some(docs),
            opts,
            Some(count),
        )?;
        // A reset must be committed even when the folder is empty.
        let opened = index.refresh_inner(reset)?;
        tracing::info!(
            docs = %docs.display(),
            index = %index.location,
            unchanged = opened.unchanged,
            chunked = opened.chunked,
            removed = opened.removed,
            passages = index.reader.searcher().num_docs(),
            "search index open"
        );
        index.opened = opened;
        Ok(Arc::new(index))
    }

    /// An in-RAM index of the given passages (benchmarks, tests, caller-built corpora).
    ///
    /// Ids should be unique: [`Bm25Index::passage`] answers with one of a
    /// duplicated id's passages.
    pub fn from_passages(passages: Vec<Passage>) -> Result<Arc<Self>, ContextError> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        let location = "in RAM".to_owned();
        let writer = new_writer(&index, &location)?;
        let mut manifest = Manifest {
            format: MANIFEST_FORMAT,
            ..Manifest::default()
        };
        for p in &passages {
            manifest
                .docs
                .entry(p.path.clone())
                .or_insert_with(|| DocEntry {
                    hash: String::new(),
                    passages: 0,
                })
                .passages += 1;
            writer
                .add_document(to_document(fields, p))
                .map_err(|e| index_error(&location, e))?;
        }
        let mut state = WriterState { writer, manifest };
        let generation = commit(&mut state, &location)?;
        let index = Self::assemble(
            &index,
            fields,
            state,
            location,
            None,
            ChunkOptions::default(),
            None,
        )?;
        index.generation.store(generation, Ordering::Relaxed);
        index.reload()?;
        Ok(Arc::new(index))
    }

    fn assemble(
        index: &Index,
        fields: Fields,
        state: WriterState,
        location: String,
        docs: Option<&Path>,
        opts: ChunkOptions,
        count: Option<Counter>,
    ) -> Result<Self, ContextError> {
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| index_error(&location, e))?;
        let mut parser = QueryParser::for_index(index, vec![fields.text, fields.heading]);
        parser.set_field_boost(fields.heading, HEADING_BOOST);
        let documents = state.manifest.docs.len();
        let generation = state.manifest.generation;
        Ok(Bm25Index {
            fields,
            reader,
            parser,
            state: Mutex::new(state),
            docs: docs.map(Path::to_path_buf),
            docs_canonical: docs.and_then(|d| std::fs::canonicalize(d).ok()),
            opts,
            count,
            location,
            opened: RefreshReport::default(),
            documents: AtomicUsize::new(documents),
            generation: AtomicU64::new(generation),
            chunked: AtomicU64::new(0),
            watcher: Mutex::new(None),
        })
    }

    /// BM25 top-k. The query is free text from end users: parse it leniently (never an error for quotes, colons, brackets; tantivy's QueryParser::parse_query_lenient), over the text and heading fields (heading boosted, e.g. 2.0). Scores are raw BM25.
    ///
    /// Terms are OR-ed (any word can match; more matches rank higher), and
    /// stemmed as English. Of tantivy's query syntax only "quoted phrases"
    /// and `+required` / `-excluded` words keep their meaning: in a user's
    /// `error: timeout` the colon is punctuation, not a field name, and in
    /// `NOT working` the word is a word.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, ContextError> {
        if k == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let (parsed, problems) = self.parser.parse_query_lenient(&free_text(query));
        if !problems.is_empty() {
            tracing::debug!(?problems, "search query parsed leniently");
        }
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&parsed, &TopDocs::with_limit(k).order_by_score())
            .map_err(|e| self.error(e))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address).map_err(|e| self.error(e))?;
            hits.push(Hit {
                passage: self.to_passage(&doc),
                score,
            });
        }
        Ok(hits)
    }

    /// A passage by id (e.g. to check a citation).
    pub fn passage(&self, id: &str) -> Option<Passage> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.id, id),
            IndexRecordOption::Basic,
        );
        let found = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .and_then(|top| match top.first() {
                Some((_, address)) => searcher.doc::<TantivyDocument>(*address).map(Some),
                None => Ok(None),
            });
        match found {
            Ok(doc) => doc.map(|d| self.to_passage(&d)),
            Err(e) => {
                tracing::warn!(id, error = %self.error(e), "passage lookup failed");
                None
            }
        }
    }

    /// Cheap, and never waits for an update in progress.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            documents: self.documents.load(Ordering::Relaxed),
            passages: self.reader.searcher().num_docs(),
            generation: self.generation.load(Ordering::Relaxed),
            chunked: self.chunked.load(Ordering::Relaxed),
        }
    }

    /// What [`Bm25Index::open`] found: how many documents it re-chunked,
    /// kept, or removed.
    pub fn opened(&self) -> &RefreshReport {
        &self.opened
    }

    /// The docs folder, when the index has one.
    pub fn docs(&self) -> Option<&Path> {
        self.docs.as_deref()
    }

    /// Re-chunks one document (absolute path, or relative to `docs`), or removes its passages when the file is gone. Commits and reloads the reader so the next search sees it.
    ///
    /// A file that is not a document (another extension, hidden, over the
    /// size limit) is treated as gone: its passages, if any, are removed.
    /// An unchanged file (same content hash) costs a read and nothing else.
    /// Blocking.
    pub fn update_path(&self, path: &Path) -> Result<UpdateReport, ContextError> {
        let docs = self.docs_or("update_path")?;
        let rel = relative_to(docs, self.docs_canonical.as_deref(), path)?;
        let reports = self.apply(&BTreeSet::from([rel.clone()]), false)?;
        // A folder stands for its documents: their sum.
        Ok(reports.into_iter().fold(
            UpdateReport {
                path: rel,
                removed: 0,
                added: 0,
                unchanged: true,
            },
            |sum, r| UpdateReport {
                path: sum.path,
                removed: sum.removed + r.removed,
                added: sum.added + r.added,
                unchanged: sum.unchanged && r.unchanged,
            },
        ))
    }

    /// Brings the index in line with the folder without a rebuild: files
    /// whose content hash changed are re-chunked, new ones added, gone ones
    /// removed. For when change events may have been missed (before
    /// [`Bm25Index::watch`], or after the watcher reported an overflow).
    /// Blocking: reads every document.
    pub fn refresh(&self) -> Result<RefreshReport, ContextError> {
        self.docs_or("refresh")?;
        self.refresh_inner(false)
    }

    /// Keeps the index up to date: a notify-debouncer-full watcher on `docs` that calls update_path for each changed file only (never a full rebuild). Idempotent. The watcher lives as long as the index.
    ///
    /// Changes made between [`Bm25Index::open`] and this call are not seen;
    /// call [`Bm25Index::refresh`] after it if that window matters. Each
    /// debounced batch of events is one commit. The watcher holds only a
    /// weak reference: dropping the last `Arc` stops it.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<(), ContextError> {
        let docs = self.docs_or("watch")?.to_path_buf();
        let mut slot = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let watch_error = |e: notify::Error| ContextError::Watch {
            path: docs.display().to_string(),
            message: e.to_string(),
        };
        let weak = Arc::downgrade(self);
        let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
            if let Some(index) = weak.upgrade() {
                index.on_events(result);
            }
        })
        .map_err(watch_error)?;
        debouncer
            .watch(&docs, RecursiveMode::Recursive)
            .map_err(watch_error)?;
        *slot = Some(debouncer);
        tracing::info!(docs = %docs.display(), "watching the docs folder");
        Ok(())
    }

    fn on_events(&self, result: DebounceEventResult) {
        let events = match result {
            Ok(events) => events,
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "docs watcher error: re-checking the folder");
                }
                self.refresh_logged();
                return;
            }
        };
        if events.iter().any(|e| e.need_rescan()) {
            tracing::info!("docs watcher missed events: re-checking the folder");
            self.refresh_logged();
            return;
        }
        let Some(docs) = self.docs.as_deref() else {
            return;
        };
        let mut rels = BTreeSet::new();
        for event in &events {
            if matches!(event.kind, EventKind::Access(_)) {
                continue;
            }
            for path in &event.paths {
                match relative_to(docs, self.docs_canonical.as_deref(), path) {
                    // The folder itself (e.g. moved away and back).
                    Ok(rel) if rel.is_empty() => {
                        self.refresh_logged();
                        return;
                    }
                    Ok(rel) => {
                        if !rel.split('/').any(|c| c.starts_with('.')) {
                            rels.insert(rel);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "docs watcher event outside the folder"),
                }
            }
        }
        if rels.is_empty() {
            return;
        }
        match self.apply(&rels, true) {
            Ok(reports) => {
                for r in reports.iter().filter(|r| !r.unchanged) {
                    tracing::info!(path = %r.path, removed = r.removed, added = r.added, "document reindexed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reindexing changed documents failed"),
        }
    }

    fn refresh_logged(&self) {
        match self.refresh_inner(false) {
            Ok(r) if r.chunked + r.removed > 0 => {
                tracing::info!(
                    chunked = r.chunked,
                    removed = r.removed,
                    "docs folder re-checked"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "re-checking the docs folder failed"),
        }
    }

    /// Every document listed or indexed, in one commit; a file that cannot
    /// be read keeps what it had (warned), so one bad permission does not
    /// stop the rest.
    fn refresh_inner(&self, force_commit: bool) -> Result<RefreshReport, ContextError> {
        let docs = self.docs_or("refresh")?;
        let listed = list_documents(docs)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut rels: BTreeSet<String> = state.manifest.docs.keys().cloned().collect();
        rels.extend(listed.into_iter().map(|(rel, _)| rel));
        let reports = self.apply_locked(&mut state, &rels, force_commit, true)?;
        let mut report = RefreshReport::default();
        for r in reports {
            if r.unchanged {
                report.unchanged += 1;
            } else if !state.manifest.docs.contains_key(&r.path) {
                report.removed += 1;
            } else {
                report.chunked += 1;
            }
        }
        Ok(report)
    }

    /// Updates the given paths (files, or folders: every document under
    /// them) in one commit. `lenient`: a file that cannot be read keeps its
    /// passages (warned) instead of failing the whole batch.
    fn apply(
        &self,
        rels: &BTreeSet<String>,
        lenient: bool,
    ) -> Result<Vec<UpdateReport>, ContextError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.apply_locked(&mut state, rels, false, lenient)
    }

    fn apply_locked(
        &self,
        state: &mut WriterState,
        rels: &BTreeSet<String>,
        force_commit: bool,
        lenient: bool,
    ) -> Result<Vec<UpdateReport>, ContextError> {
        let docs = self.docs_or("update")?;
        // Folders stand for the documents under them, listed now and indexed before.
        let mut files = BTreeSet::new();
        for rel in rels {
            let abs = docs.join(rel);
            // "" is the docs folder itself.
            let prefix = if rel.is_empty() {
                String::new()
            } else {
                format!("{rel}/")
            };
            if abs.is_dir() {
                for (sub, _) in list_documents(&abs)? {
                    files.insert(format!("{prefix}{sub}"));
                }
                files.extend(indexed_under(&state.manifest.docs, &prefix));
            } else if !abs.exists() && !state.manifest.docs.contains_key(rel) {
                // Perhaps a folder that is gone: its documents are.
                files.extend(indexed_under(&state.manifest.docs, &prefix));
                if is_document_path(rel) {
                    files.insert(rel.clone());
                }
            } else {
                files.insert(rel.clone());
            }
        }
        let before = state.manifest.clone();
        let mut reports = Vec::with_capacity(files.len());
        let mut chunked = 0u64;
        for rel in &files {
            match self.update_one(state, rel) {
                Ok(report) => {
                    if !report.unchanged && state.manifest.docs.contains_key(rel) {
                        chunked += 1;
                    }
                    reports.push(report);
                }
                Err(e @ ContextError::ReadDocument { .. }) if lenient => {
                    tracing::warn!(error = %e, "document left as last indexed");
                    reports.push(UpdateReport {
                        path: rel.clone(),
                        removed: 0,
                        added: 0,
                        unchanged: true,
                    });
                }
                Err(e) => {
                    // Leaves the index as last committed, manifest included.
                    if let Err(rollback) = state.writer.rollback() {
                        tracing::warn!(error = %rollback, "search index rollback failed");
                    }
                    state.manifest = before;
                    return Err(e);
                }
            }
        }
        if force_commit || reports.iter().any(|r| !r.unchanged) {
            let generation = commit(state, &self.location)?;
            self.generation.store(generation, Ordering::Relaxed);
            self.documents
                .store(state.manifest.docs.len(), Ordering::Relaxed);
            self.chunked.fetch_add(chunked, Ordering::Relaxed);
            self.reload()?;
        }
        Ok(reports)
    }

    fn update_one(&self, state: &mut WriterState, rel: &str) -> Result<UpdateReport, ContextError> {
        let docs = self.docs_or("update")?;
        let document = if is_document_path(rel) {
            read_document(rel, &docs.join(rel))?
        } else {
            None
        };
        let old = state.manifest.docs.get(rel);
        let mut report = UpdateReport {
            path: rel.to_owned(),
            removed: 0,
            added: 0,
            unchanged: false,
        };
        let Some(Document { text, hash }) = document else {
            match state.manifest.docs.remove(rel) {
                Some(old) => {
                    state.writer.delete_term(self.path_term(rel));
                    report.removed = old.passages;
                }
                None => report.unchanged = true,
            }
            return Ok(report);
        };
        if old.is_some_and(|o| o.hash == hash) {
            report.unchanged = true;
            return Ok(report);
        }
        if let Some(old) = old {
            report.removed = old.passages;
            state.writer.delete_term(self.path_term(rel));
        }
        let count: &dyn Fn(&str) -> usize = match &self.count {
            Some(count) => count.as_ref(),
            None => &|s: &str| s.split_whitespace().count(),
        };
        let passages = chunk_document(rel, &text, &self.opts, count);
        for p in &passages {
            state
                .writer
                .add_document(to_document(self.fields, p))
                .map_err(|e| self.error(e))?;
        }
        report.added = passages.len();
        state.manifest.docs.insert(
            rel.to_owned(),
            DocEntry {
                hash,
                passages: passages.len(),
            },
        );
        Ok(report)
    }

    fn reload(&self) -> Result<(), ContextError> {
        self.reader.reload().map_err(|e| self.error(e))
    }

    fn path_term(&self, rel: &str) -> Term {
        Term::from_field_text(self.fields.path, rel)
    }

    fn to_passage(&self, doc: &TantivyDocument) -> Passage {
        let get = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        Passage {
            id: get(self.fields.id),
            path: get(self.fields.path),
            heading: get(self.fields.heading),
            text: get(self.fields.text),
        }
    }

    fn docs_or(&self, operation: &'static str) -> Result<&Path, ContextError> {
        self.docs
            .as_deref()
            .ok_or(ContextError::NoDocsFolder { operation })
    }

    fn error(&self, source: TantivyError) -> ContextError {
        index_error(&self.location, source)
    }
}

/// The query with the syntax end users do not mean taken out: field
/// prefixes, ranges, groups, boosts, wildcards and boolean keywords become
/// plain words; a dangling quote is dropped so the words after it are not
/// one long phrase.
fn free_text(query: &str) -> String {
    const SYNTAX: &[char] = &[
        ':', '^', '`', '{', '}', '[', ']', '(', ')', '!', '\\', '*', '~', '?', '\'', '&', '|',
    ];
    let mut text: String = query
        .chars()
        .map(|c| if SYNTAX.contains(&c) { ' ' } else { c })
        .collect();
    if text.matches('"').count() % 2 == 1
        && let Some(last) = text.rfind('"')
    {
        text.replace_range(last..last + 1, " ");
    }
    text.split_whitespace()
        .map(|w| match w {
            "AND" | "OR" | "NOT" | "IN" => w.to_ascii_lowercase(),
            _ => w.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn to_document(fields: Fields, p: &Passage) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.id, &p.id);
    doc.add_text(fields.path, &p.path);
    doc.add_text(fields.heading, &p.heading);
    doc.add_text(fields.text, &p.text);
    doc
}

/// Commits what the writer holds with the manifest as payload; the new generation.
fn commit(state: &mut WriterState, location: &str) -> Result<u64, ContextError> {
    state.manifest.generation += 1;
    let payload = match serde_json::to_string(&state.manifest) {
        Ok(payload) => payload,
        Err(e) => {
            state.manifest.generation -= 1;
            return Err(ContextError::Index {
                location: location.to_owned(),
                source: TantivyError::InternalError(format!("manifest: {e}")),
            });
        }
    };
    let done = state.writer.prepare_commit().and_then(|mut prepared| {
        prepared.set_payload(&payload);
        prepared.commit()
    });
    match done {
        Ok(_) => Ok(state.manifest.generation),
        Err(e) => {
            state.manifest.generation -= 1;
            Err(index_error(location, e))
        }
    }
}

fn new_writer(index: &Index, location: &str) -> Result<IndexWriter, ContextError> {
    // Two indexing threads at most: the index serves a host that has other
    // work, and documents are small. 20 MB each is above tantivy's minimum.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(2);
    index
        .writer_with_num_threads(threads, threads * 20_000_000)
        .map_err(|e| index_error(location, e))
}

fn open_dir(dir: &Path, schema: Schema) -> Result<Index, ContextError> {
    let location = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|source| ContextError::IndexDir {
        dir: location.clone(),
        source,
    })?;
    let directory = MmapDirectory::open(dir)
        .map_err(|e| index_error(&location, TantivyError::OpenDirectoryError(e)))?;
    let exists = Index::exists(&directory)
        .map_err(|e| index_error(&location, TantivyError::OpenReadError(e)))?;
    if !exists {
        return Index::create(directory, schema, IndexSettings::default())
            .map_err(|e| index_error(&location, e));
    }
    let index = Index::open(directory).map_err(|e| index_error(&location, e))?;
    if index.schema() != schema {
        return Err(ContextError::IndexLayout { dir: location });
    }
    Ok(index)
}

fn index_error(location: &str, source: TantivyError) -> ContextError {
    match source {
        TantivyError::LockFailure(..) => ContextError::IndexLocked {
            dir: location.to_owned(),
        },
        TantivyError::IncompatibleIndex(_) | TantivyError::SchemaError(_) => {
            ContextError::IndexLayout {
                dir: location.to_owned(),
            }
        }
        source => ContextError::Index {
            location: location.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::free_text;

    #[test]
    fn free_text_keeps_words_phrases_and_signs() {
        assert_eq!(free_text("error: (timeout]"), "error timeout");
        assert_eq!(
            free_text("\"exact phrase\" -not +must"),
            "\"exact phrase\" -not +must"
        );
        assert_eq!(free_text("\"a: (b] c"), "a b c");
        assert_eq!(
            free_text("why NOT working OR failing"),
            "why not working or failing"
        );
        assert_eq!(
            free_text("path:secret.md heading^3 wild*"),
            "path secret.md heading 3 wild"
        );
    }
}

/// The indexed documents under a folder (`prefix` ends in `/`; "" is every one).
fn indexed_under<'a>(
    docs: &'a BTreeMap<String, DocEntry>,
    prefix: &'a str,
) -> impl Iterator<Item = String> + 'a {
    docs.keys().filter(move |k| k.starts_with(prefix)).cloned()
}
