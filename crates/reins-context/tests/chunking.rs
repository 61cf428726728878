//! Chunking: sections, code fences, overlap, the token budget.

use reins_context::{ChunkOptions, Passage, chunk_document};

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

fn opts(max_tokens: usize, overlap_tokens: usize) -> ChunkOptions {
    ChunkOptions {
        max_tokens,
        overlap_tokens,
    }
}

/// Paragraphs of distinct numbered words, so every word says where it came from.
fn paragraphs(tag: &str, n: usize, len: usize) -> String {
    (0..n)
        .map(|p| {
            (0..len)
                .map(|w| format!("{tag}p{p}w{w}"))
                .collect::<Vec<_>>()
                .join(" ")
                + "."
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn sections_carry_their_heading_trail_and_not_the_heading_text() {
    let doc = "Preamble before any heading.\n\n\
               # Install\n\nDownload the archive.\n\n\
               ## Linux\n\nUse the package manager.\n\n\
               ### Debian\n\napt install it.\n\n\
               ## Windows\n\nRun the installer.\n\n\
               # Empty\n\n\n\
               # Usage\n\nRun it.\n";
    let passages = chunk_document("guide/install.md", doc, &ChunkOptions::default(), &words);
    let got: Vec<(&str, &str)> = passages
        .iter()
        .map(|p| (p.heading.as_str(), p.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("", "Preamble before any heading."),
            ("Install", "Download the archive."),
            ("Install > Linux", "Use the package manager."),
            ("Install > Linux > Debian", "apt install it."),
            ("Install > Windows", "Run the installer."),
            ("Usage", "Run it."),
        ]
    );
    let ids: Vec<&str> = passages.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        (1..=6)
            .map(|n| format!("guide/install.md#{n}"))
            .collect::<Vec<_>>()
    );
    assert!(passages.iter().all(|p| p.path == "guide/install.md"));
}

#[test]
fn code_fences_hide_headings_and_stay_whole() {
    let code =
        "```bash\n# not a heading, a shell comment\necho one\n\necho two after a blank line\n```";
    let doc = format!(
        "# Build\n\nIntro paragraph.\n\n{code}\n\nAfter the code.\n\n~~~\n## also code\n~~~\n"
    );
    let passages = chunk_document("b.md", &doc, &opts(200, 0), &words);
    assert_eq!(passages.len(), 1, "{passages:#?}");
    assert_eq!(passages[0].heading, "Build");
    assert!(passages[0].text.contains(code), "{}", passages[0].text);
    assert!(passages[0].text.contains("~~~\n## also code\n~~~"));

    // With a budget that holds the block but not its neighbours, the block
    // is one passage of its own, never cut.
    let block_words = words(code);
    let passages = chunk_document("b.md", &doc, &opts(block_words + 1, 0), &words);
    assert!(
        passages.iter().any(|p| p.text == code),
        "the fence should be one passage: {passages:#?}"
    );
}

#[test]
fn an_unclosed_fence_runs_to_the_end() {
    let doc = "# A\n\ntext\n\n```\ncode\n# inside\n";
    let passages = chunk_document("u.md", doc, &ChunkOptions::default(), &words);
    assert!(passages.iter().all(|p| p.heading == "A"), "{passages:#?}");
    assert!(passages.iter().any(|p| p.text.contains("# inside")));
}

#[test]
fn a_code_block_over_budget_is_cut_at_lines() {
    let lines: Vec<String> = (0..40).map(|i| format!("let v{i} = {i};")).collect();
    let doc = format!("```rust\n{}\n```\n", lines.join("\n"));
    let passages = chunk_document("c.md", &doc, &opts(30, 0), &words);
    assert!(passages.len() > 1);
    for p in &passages {
        assert!(words(&p.text) <= 30, "{}", p.text);
        // Every line is whole.
        for line in p.text.lines() {
            assert!(
                line.starts_with("let v") || line.starts_with("```"),
                "cut inside a line: {line:?}"
            );
        }
    }
}

#[test]
fn the_budget_is_respected_and_nothing_is_lost() {
    let long_sentence = (0..120)
        .map(|i| format!("long{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let doc = format!(
        "# Big\n\n{}\n\n{long_sentence}\n\n{}\n\nSmall one. Two. Three.\n",
        paragraphs("a", 7, 13),
        paragraphs("b", 3, 45)
    );
    let max = 25;
    let passages = chunk_document("big.md", &doc, &opts(max, 5), &words);
    for p in &passages {
        assert!(
            words(&p.text) <= max,
            "{} words: {}",
            words(&p.text),
            p.text
        );
        assert!(!p.text.trim().is_empty());
    }
    // Every word of the document is in some passage.
    let all: std::collections::HashSet<&str> = passages
        .iter()
        .flat_map(|p| p.text.split_whitespace())
        .collect();
    for w in doc.split_whitespace().filter(|w| *w != "#" && *w != "Big") {
        assert!(all.contains(w), "{w} lost");
    }
}

#[test]
fn consecutive_passages_of_a_section_overlap() {
    let doc = format!(
        "# S\n\n{}\n\n# T\n\n{}",
        paragraphs("s", 12, 8),
        paragraphs("t", 12, 8)
    );
    let overlap = 4;
    let passages = chunk_document("o.md", &doc, &opts(30, overlap), &words);
    assert!(passages.len() >= 6, "{passages:#?}");
    let mut checked = 0;
    for pair in passages.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let next_words: Vec<&str> = next.text.split_whitespace().collect();
        let prev_words: Vec<&str> = prev.text.split_whitespace().collect();
        if prev.heading != next.heading {
            // A new section starts fresh.
            assert!(!prev_words.contains(&next_words[0]), "{prev:?} {next:?}");
            continue;
        }
        // `next` starts with the last few words of `prev`.
        let shared = (1..=overlap.min(prev_words.len())).rev().find(|&j| {
            next_words.len() >= j && prev_words[prev_words.len() - j..] == next_words[..j]
        });
        assert!(
            shared.is_some(),
            "no overlap between\n{}\n---\n{}",
            prev.text,
            next.text
        );
        checked += 1;
    }
    assert!(checked >= 4);
}

#[test]
fn long_paragraphs_are_cut_at_sentences_first() {
    let para = (0..10)
        .map(|i| format!("Sentence number {i} has exactly seven words."))
        .collect::<Vec<_>>()
        .join(" ");
    let passages = chunk_document("s.txt", &para, &opts(15, 0), &words);
    for p in &passages {
        assert!(p.text.ends_with('.'), "cut mid-sentence: {:?}", p.text);
        assert!(words(&p.text) <= 15);
    }
    assert_eq!(passages.len(), 5);
}

#[test]
fn crlf_is_normalized_and_plain_text_has_no_headings() {
    let lf = "# Title\n\nfirst para\nsecond line\n\nnext para\n";
    let crlf = lf.replace('\n', "\r\n");
    let a = chunk_document("x.md", lf, &ChunkOptions::default(), &words);
    let b = chunk_document("x.md", &crlf, &ChunkOptions::default(), &words);
    assert_eq!(a, b);
    assert!(b.iter().all(|p| !p.text.contains('\r')));

    let t = chunk_document("x.txt", &crlf, &ChunkOptions::default(), &words);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].heading, "");
    assert!(t[0].text.starts_with("# Title"));
}

#[test]
fn empty_documents_and_sections_yield_nothing() {
    let none: Vec<Passage> = Vec::new();
    assert_eq!(
        chunk_document("e.md", "", &ChunkOptions::default(), &words),
        none
    );
    assert_eq!(
        chunk_document(
            "e.md",
            "# A\n\n## B\n\n   \n",
            &ChunkOptions::default(),
            &words
        ),
        none
    );
}

#[test]
fn text_without_spaces_is_cut_on_char_boundaries() {
    // A counter of characters, so a run with no spaces must be cut inside it.
    let chars = |s: &str| s.chars().count();
    let text = "日本語のテキスト".repeat(40);
    let passages = chunk_document("j.txt", &text, &opts(50, 0), &chars);
    assert!(passages.len() > 1);
    assert!(passages.iter().all(|p| p.text.chars().count() <= 50));
    let joined: String = passages.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(joined, text);
}
