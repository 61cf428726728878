//! Token counts for budgets when a provider reports no usage.
//!
//! Counts use the `o200k_base` BPE (the tokenizer of current OpenAI models;
//! other models' tokenizers differ by a few percent, which is what an estimate
//! is for). The tokenizers live in the runtime ([`Tokenizer`]), which also
//! answers plugins' `count-tokens`, so both count alike.

use reins_runtime::{Message, Tokenizer};

/// Tokens of one text.
pub fn count(text: &str) -> u64 {
    Tokenizer::O200k.count(text) as u64
}

/// The longest prefix of `text` of at most `max` tokens (whole tokens; a
/// token cut inside a multi-byte character drops that character).
pub fn truncate(text: &str, max: u64) -> String {
    Tokenizer::O200k.truncate(text, usize::try_from(max).unwrap_or(usize::MAX))
}

/// Token counts of texts seen lately, for the estimates of runs whose
/// provider reports no usage. Prompts repeat (a pipeline's system prompt
/// is in every request) and so do answers (a scripted or deterministic
/// model, a cached answer); counting a 1 KB answer again costs about
/// 200 µs, hashing it about 1 µs. Texts are keyed by a 64-bit hash and
/// their length; a slot holds the last text that hashed to it.
pub struct Memo {
    slots: std::sync::Mutex<Vec<(u64, usize, u64)>>,
}

/// Texts shorter than this are counted directly: hashing saves nothing.
const MEMO_MIN_LEN: usize = 256;
const MEMO_SLOTS: usize = 64;

impl Default for Memo {
    fn default() -> Memo {
        Memo {
            slots: std::sync::Mutex::new(vec![(0, 0, 0); MEMO_SLOTS]),
        }
    }
}

impl Memo {
    /// Tokens of `text`, from the memo when it was counted lately.
    pub fn count(&self, text: &str) -> u64 {
        if text.len() < MEMO_MIN_LEN {
            return count(text);
        }
        use std::hash::Hasher;
        // `DefaultHasher::new` has fixed keys: a text hashes alike every call.
        let mut h = std::hash::DefaultHasher::new();
        h.write(text.as_bytes());
        let hash = h.finish();
        let slot = (hash % MEMO_SLOTS as u64) as usize;
        if let Ok(slots) = self.slots.lock()
            && let Some(&(k, len, n)) = slots.get(slot)
            && k == hash
            && len == text.len()
        {
            return n;
        }
        let n = count(text);
        if let Ok(mut slots) = self.slots.lock()
            && let Some(s) = slots.get_mut(slot)
        {
            *s = (hash, text.len(), n);
        }
        n
    }

    /// Tokens of a chat prompt, framing included.
    pub fn count_messages(&self, messages: &[Message]) -> u64 {
        REPLY_PRIMING
            + messages
                .iter()
                .map(|m| MESSAGE_OVERHEAD + count(&m.role) + self.count(&m.content))
                .sum::<u64>()
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
    fn the_memo_counts_as_the_tokenizer_does() {
        let memo = Memo::default();
        let long = "The total liability of either party is capped at the fees paid. ".repeat(20);
        let other = "Indemnity survives termination of this agreement for two years. ".repeat(20);
        for _ in 0..2 {
            assert_eq!(memo.count(&long), count(&long));
            assert_eq!(memo.count(&other), count(&other));
            assert_eq!(memo.count("short"), count("short"));
        }
        let m = vec![
            Message::new("system", long.clone()),
            Message::new("user", "hi"),
        ];
        assert_eq!(memo.count_messages(&m), count_messages(&m));
    }

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
