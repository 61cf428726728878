//! Stage 2, the context builder: it picks and orders the request's chunks
//! under the token budget; they join the system prompt the model sees.

use super::*;

impl Run<'_> {
    pub(super) async fn assemble(
        &mut self,
        messages: &[Message],
        chunks: Vec<Chunk>,
    ) -> Result<Vec<Chunk>, RunError> {
        let p = self.p;
        let Some(context) = &p.config.context else {
            return Ok(chunks);
        };
        if chunks.is_empty() {
            return Ok(chunks);
        }
        let plugin = self.plugin(Layer::Context, &context.plugin)?;
        let query = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let ctx = self.ctx.clone();
        let budget = context.budget_tokens;
        let input = chunks.clone();
        let timed = blocking(&plugin, move |p| p.assemble(&ctx, &query, &input, budget)).await;
        let total = chunks.len();
        Ok(self
            .settle(Layer::Context, &plugin, timed, |c| {
                format!("{} of {total} chunks", c.len())
            })?
            .unwrap_or(chunks))
    }

    /// System prompt (with the context appended) + the normalized conversation.
    pub(super) fn conversation(&self, messages: Vec<Message>, chunks: &[Chunk]) -> Vec<Message> {
        let mut system = self.p.system_prompt.clone().unwrap_or_default();
        if !chunks.is_empty() {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str("Context:");
            for c in chunks {
                system.push_str(&format!("\n\n[{}] {}", c.id, c.text));
            }
        }
        let mut out = Vec::with_capacity(messages.len() + 1);
        if !system.is_empty() {
            out.push(Message::new("system", system));
        }
        out.extend(messages);
        out
    }
}
