//! Token counts for budgets when a provider reports no usage.
//!
//! Counts use the `o200k_base` BPE (the tokenizer of current OpenAI models;
//! other models' tokenizers differ by a few percent, which is what an estimate
//! is for). The BPE tables are built once per process, on first use.

use reins_runtime::Message;

/// Tokens of one text.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton().count_ordinary(text) as u64
}

/// The longest prefix of `text` of at most `max` tokens (whole tokens; a
/// token cut inside a multi-byte character drops that character).
pub fn truncate(text: &str, max: u64) -> String {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let tokens = bpe.encode_ordinary(text);
    if tokens.len() as u64 <= max {
        return text.to_owned();
    }
    let mut keep = usize::try_from(max).unwrap_or(usize::MAX).min(tokens.len());
    loop {
        if let Ok(s) = bpe.decode(&tokens[..keep])
            && count(&s) <= max
        {
            return s;
        }
        if keep == 0 {
            return String::new();
        }
        keep -= 1;
    }
}

/// Per-message framing of the chat format (role and separators).
pub const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens that prime the assistant's reply.
pub const REPLY_PRIMING: u64 = 3;

/// Tokens of one message, framing included.
pub fn count_message(message: &Message) -> u64 {
    MESSAGE_OVERHEAD + count(&message.role) + count(&message.content)
}

/// Tokens of a chat prompt.
pub fn count_messages(messages: &[Message]) -> u64 {
    REPLY_PRIMING + messages.iter().map(count_message).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_plausible() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        let m = [Message::new("user", "hello world")];
        assert_eq!(count_messages(&m), REPLY_PRIMING + MESSAGE_OVERHEAD + 1 + 2);
    }

    #[test]
    fn truncation_keeps_a_prefix_within_the_budget() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let cut = truncate(&text, 7);
        assert!(count(&cut) <= 7 && !cut.is_empty());
        assert!(text.starts_with(&cut));
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("héllo wörld ünïcode", 0), "");
    }
}
