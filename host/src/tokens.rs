//! Token counts for budgets when a provider reports no usage.
//!
//! Counts use the `o200k_base` BPE (the tokenizer of current OpenAI models;
//! other models' tokenizers differ by a few percent, which is what an estimate
//! is for). The BPE tables are built once per process, on first use.

use crate::runtime::Message;

/// Tokens of one text.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton().count_ordinary(text) as u64
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
}
